"""The attention probe's engine calls, run in the worker thread: one click in, layers' worth of numbers out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_muvit.widgets.attention.overlay import ProbeView


@dataclass
class ProbeRequest:
    """One click, read on the GUI thread: everything the worker needs, no Qt object."""

    key: tuple
    source: object
    point_yx: tuple[float, float]
    layer: str | int
    head: str | int
    query_level: int


def choice(value) -> str | int:
    """Combo text -> the engine's argument: 'last'/'rollout'/'mean' stay, digits become an index."""
    return int(value) if str(value).isdigit() else str(value)


def open_probe_session(source, model: str, levels: str):
    """The engine's per-tile cache for this image, model and levels (the model is loaded once)."""
    from napari_muvit.engine import attention as engine_attention

    return engine_attention.open_session(source, model, levels or None)


def run_probe(session, request: ProbeRequest):
    """One probe on the session -> `(ProbeView, AttentionResult, info)` for the GUI thread."""
    from napari_muvit.engine import attention as engine_attention

    result = engine_attention.attention_probe(session, request.point_yx, layer=request.layer,
                                              head=request.head, query_level=request.query_level)
    levels = tuple(int(v) for v in result.levels or session.levels)
    view = ProbeView(levels, [m for m, _ in result.maps], [b for _, b in result.maps],
                     np.asarray(result.query_world_yx, dtype=float), request.query_level, session.patch_size)
    info = dict(result.info)
    info["query_share"] = np.asarray(result.level_share, dtype=float)
    info["tile_share"] = tile_level_share(session, request)
    return view, result, info


def tile_level_share(session, request: ProbeRequest) -> np.ndarray:
    """Share of attention per level averaged over the query level's tokens of the probed tile, `(L,)`.

    `engine.attention_share.tile_level_share` on the session's cached weights for up to
    `TILE_SHARE_QUERIES` evenly spaced query tokens; cached per tile, layer, head and query level.
    """
    from napari_muvit.engine import attention_share

    entry, origin = session.entry_for(request.point_yx)  # cached: the probe just ran on this tile
    key = (origin, request.layer, request.head, request.query_level)
    cache = getattr(session, "_widget_tile_share", None)
    if cache is not None and cache[0] == key:
        return cache[1]
    level_index = list(session.levels).index(int(request.query_level))
    share = attention_share.tile_level_share(entry["attn"], entry["grid"], len(session.levels), level_index,
                                             request.layer, request.head, attention_share.TILE_SHARE_QUERIES)
    session._widget_tile_share = (key, share)
    return share
