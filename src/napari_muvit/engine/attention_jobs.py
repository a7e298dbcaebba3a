"""The attention probe as an engine job: one click in, plain numbers out.

`probe_job` keeps the probe session (the loaded model and its per-tile cache, `engine.attention`) in the
process that runs it, so successive clicks on the same image, model and levels reuse it. The attention
dock runs it in its own persistent worker process for images read from a file (torch and the encoder pass
never hold the GUI's interpreter lock, and a long prediction in the engine process does not delay a click),
and in a thread for in-memory images, which cannot be sent to another process cheaply.
"""

from __future__ import annotations

import threading
import time

import numpy as np

# "key" -> (source identity, model, levels), "session" -> its AttentionSession, "tile_share_key" /
# "tile_share" -> the last tile share (cleared with the session)
_CACHE: dict = {}
_LOCK = threading.Lock()


def probe_job(request: dict, progress=None, cancel=None) -> dict:
    """One probe. ``request``: ``key`` (hashable: what identifies image, model and levels), ``source`` (a
    path, an array or a `Pyramid`), ``model``, ``levels`` (e.g. ``"1,4,16"``, empty = the model's),
    ``point_yx`` (world px), ``layer``, ``head``, ``query_level`` (the finest probed level when the model's
    levels do not hold it).

    Returns ``levels``, ``maps`` (one ``(h, w)`` float32 per level), ``bboxes`` (world px), ``query_world_yx``,
    ``query_level``, ``patch_size``, ``level_share`` (the clicked token's attention per level),
    ``tile_share`` (the same averaged over the tile's query tokens), ``tile`` (where the cached tile is),
    ``tile_px``, ``info`` (layer and head counts, encoder passes so far, ``compute_s``: this call's
    seconds, session opening included) and ``key`` (the request's)."""
    from napari_muvit.engine.attention import attention_probe, open_session

    t0 = time.perf_counter()
    with _LOCK:  # one probe at a time per process; the dock never sends two at once anyway
        key = tuple(request["key"])
        session = _CACHE.get("session") if _CACHE.get("key") == key else None
        if session is None:
            _CACHE.clear()  # the old session's model and tiles go before the new ones are loaded
            session = open_session(request["source"], request["model"], request.get("levels") or None)
            _CACHE.update(key=key, session=session)
        query_level = int(request["query_level"])
        if query_level not in session.levels:
            query_level = int(session.levels[0])
        result = attention_probe(session, tuple(request["point_yx"]), layer=request["layer"],
                                 head=request["head"], query_level=query_level)
        levels = tuple(int(v) for v in result.levels or session.levels)
        tile_share = tile_level_share(session, tuple(request["point_yx"]), request["layer"], request["head"],
                                      query_level)
        return {
            "levels": levels,
            "maps": [np.asarray(m, dtype=np.float32) for m, _ in result.maps],
            "bboxes": [np.asarray(b, dtype=float) for _, b in result.maps],
            "query_world_yx": np.asarray(result.query_world_yx, dtype=float),
            "query_level": query_level,
            "patch_size": int(session.patch_size),
            "level_share": np.asarray(result.level_share, dtype=float),
            "tile_share": tile_share,
            "tile": dict(result.tile),
            "tile_px": int(session.tile),
            "info": dict(result.info, compute_s=time.perf_counter() - t0),
            "key": key,
        }


def tile_level_share(session, point_yx, layer, head, query_level) -> np.ndarray:
    """Share of attention per level averaged over the query level's tokens of the probed tile, `(L,)`.

    `engine.attention_share.tile_level_share` on the session's cached weights for up to
    `TILE_SHARE_QUERIES` evenly spaced query tokens; the last one is kept (per tile, layer, head and query
    level) with the session in `_CACHE`.
    """
    from napari_muvit.engine import attention_share

    entry, origin = session.entry_for(point_yx)  # cached: the probe just ran on this tile
    key = (origin, layer, head, query_level)
    if _CACHE.get("tile_share_key") == key:
        return _CACHE["tile_share"]
    level_index = list(session.levels).index(int(query_level))
    share = attention_share.tile_level_share(entry["attn"], entry["grid"], len(session.levels), level_index,
                                             layer, head, attention_share.TILE_SHARE_QUERIES)
    _CACHE.update(tile_share_key=key, tile_share=share)
    return share
