"""Attention probe: where does the token under a clicked point look, at every level?

For the tile containing the point (tiles of ``tile`` level-1 px on a grid anchored at world 0), the
encoder runs once (fused path) and keeps every layer's rotated queries and keys (`attention_cache.TileAttention`);
the session keeps that tile's crops and these, so a further click in the same tile computes only the
attention rows it needs. The query token is the patch of level
``query_level``'s crop that contains the point. Results are per level a ``(h, w)`` map of attention
weights with the crop's world bbox ``(2, 2)`` (centres of its first and last pixel; each map cell covers
``level * patch`` world px), and the share of the query's attention that each level receives.

``layer``: ``"last"``, a layer index (negative counts from the end) or ``"rollout"`` (attention rollout:
per layer ``A = (head-reduced attention + I) / 2`` with rows renormalised, multiplied from the first
layer to the last; evaluated as vector-matrix products from the query's side). ``head``: ``"mean"`` over
heads or a head index.
Memory: a cached tile holds ``2 * layers * N * dim * 4`` bytes of q and k (N tokens of all levels) plus
``layers * N^2`` bytes of 8-bit head-mean weights for rollout (paper-sized encoder: 113 + 113 MB) instead of
``layers * heads * N^2 * 4`` for the full weights (2.7 GB); see `attention_cache`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from napari_muvit.data import Normalizer, Pyramid, open_pyramid
from napari_muvit.data.geometry import pixel_corner, tile_centres
from napari_muvit.model import load_model

from .attention_cache import TileAttention, attention_rows
from .attention_share import query_tokens
from .device import configure_threads, resolve_device
from .recipe import parse_levels


@dataclass
class AttentionResult:
    maps: list  # per level: (weights (h, w) float32, world bbox (2, 2) float32)
    level_share: np.ndarray  # (L,) sums to 1
    query_world_yx: tuple[float, float]  # centre of the query patch, world px
    tile: dict  # origin_yx, center_yx, query_level, query_index
    levels: tuple = ()
    info: dict = field(default_factory=dict)


class AttentionSession:
    """Per-tile cache of crops and attention weights for one slide, model and level set."""

    def __init__(self, pyramid, model, levels=None, tile: int | None = None, normalizer=None, device="cpu"):
        self.device = resolve_device(device)
        encoder = model.encoder
        card = getattr(model, "card", None)
        model_levels = tuple(int(v) for v in encoder.levels)
        levels = tuple(int(v) for v in (levels or model_levels))
        if levels != model_levels:
            if not set(levels) <= set(model_levels):
                raise ValueError(
                    f"levels {','.join(map(str, levels))} were not used to train this model; it was trained on "
                    f"levels {','.join(map(str, model_levels))}."
                )
            encoder = encoder.extract_levels(levels)
        if pyramid.n_channels != encoder.in_channels:
            raise ValueError(f"the slide has {pyramid.n_channels} channel(s) but the model expects {encoder.in_channels}.")
        self.encoder = encoder.to(self.device).eval()
        self.pyramid = pyramid
        self.levels = levels
        self.patch_size = int(np.atleast_1d(encoder.patch_size)[0])
        self.tile = int(tile or getattr(card, "crop_size", None) or 256)
        if self.tile % self.patch_size:
            raise ValueError(f"tile {self.tile} is not divisible by the model's patch size {self.patch_size}.")
        self.num_layers = len(encoder.layers)
        self.heads = int(getattr(encoder, "heads", 1))
        if normalizer is None:
            norm = getattr(card, "normalization", None)
            normalizer = Normalizer.from_dict(norm) if norm else Normalizer.from_pyramid(pyramid)
        self.normalizer = normalizer
        self._key = None
        self._entry = None
        self.forward_calls = 0

    # ---- tiles --------------------------------------------------------------------------------
    def tile_origin(self, point_yx) -> tuple[int, int]:
        y, x = (float(v) for v in point_yx)
        h, w = self.pyramid.shape[-2:]
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(f"point ({y:.0f}, {x:.0f}) is outside the slide; click inside 0..{h} x 0..{w}.")
        s = self.tile
        return (int(y // s) * s, int(x // s) * s)

    def run(self, x: np.ndarray, bbox: np.ndarray) -> dict:
        """Encoder on one input ``x (L, C, H, W)``, ``bbox (L, 2, 2)``; returns the cache entry, whose
        ``"attn"`` is a `TileAttention` (rotated q and k of every layer, weights on demand)."""
        xt = torch.as_tensor(x, dtype=torch.float32, device=self.device)[None]
        bt = torch.as_tensor(bbox, dtype=torch.float32, device=self.device)[None]
        attn = TileAttention.from_encoder(self.encoder, xt, bt)
        self.forward_calls += 1
        grid = tuple(int(n) // self.patch_size for n in x.shape[-2:])
        return {"x": x, "bbox": np.asarray(bbox, np.float32), "grid": grid, "attn": attn}

    def cache_nbytes(self) -> int:
        """Bytes the cached tile holds (crops + attention cache); 0 before the first click."""
        return 0 if self._entry is None else entry_nbytes(self._entry)

    def entry_for(self, point_yx) -> tuple[dict, tuple[int, int]]:
        origin = self.tile_origin(point_yx)
        if self._key != origin:
            center = tuple(float(v) for v in tile_centres(0, self.tile, origin))
            x, bbox = self.pyramid.crops(center, self.levels, self.tile, normalizer=self.normalizer)
            self._entry = self.run(x, bbox) | {"center": center}
            self._key = origin
        return self._entry, origin


def entry_nbytes(entry: dict) -> int:
    """Bytes of a cache entry: crops, boxes and the attention cache (`TileAttention` or full weights)."""
    attn = entry["attn"]
    return int(np.asarray(entry["x"]).nbytes + entry["bbox"].nbytes + attn.nbytes)


def query_token(bbox_level: np.ndarray, level: int, patch: int, grid, point_yx) -> tuple[int, int]:
    """Row/column of the patch of a level's crop containing world ``point_yx`` (clipped to the grid)."""
    edge = pixel_corner(np.asarray(bbox_level[0], np.float64), level)  # first pixel's outer edge
    k = np.floor((np.asarray(point_yx, np.float64) - edge) / (level * patch)).astype(int)
    return int(np.clip(k[0], 0, grid[0] - 1)), int(np.clip(k[1], 0, grid[1] - 1))


def probe_entry(entry: dict, levels, patch: int, point_yx, layer="last", head="mean", query_level=1) -> AttentionResult:
    """The probe on a cached entry (see `AttentionSession.run`)."""
    levels = tuple(int(v) for v in levels)
    if int(query_level) not in levels:
        raise ValueError(f"query level {query_level} is not one of the levels {','.join(map(str, levels))}.")
    li = levels.index(int(query_level))
    gh, gw = entry["grid"]
    n = gh * gw
    r, c = query_token(entry["bbox"][li], levels[li], patch, (gh, gw), point_yx)
    q = li * n + r * gw + c
    if layer == "rollout" and isinstance(entry["attn"], TileAttention):
        # the tile's level share (attention_share) asks for this mean row next: one rollout pass serves both
        row = entry["attn"].rows([q], layer, head, mean_of=query_tokens((gh, gw), li))[0].numpy()
    else:
        row = attention_rows(entry["attn"], [q], layer, head)[0]
    maps = [(row[i * n : (i + 1) * n].reshape(gh, gw).astype(np.float32), entry["bbox"][i].copy())
            for i in range(len(levels))]
    share = np.array([m.sum() for m, _ in maps], np.float64)
    share = share / share.sum()
    edge = pixel_corner(entry["bbox"][li][0], levels[li])
    cell = levels[li] * patch
    qyx = (float(edge[0] + (r + 0.5) * cell - 0.5), float(edge[1] + (c + 0.5) * cell - 0.5))
    return AttentionResult(maps=maps, level_share=share, query_world_yx=qyx, levels=levels,
                           tile={"query_level": int(query_level), "query_index": int(q), "query_rc": (r, c)})


def attention_probe(recipe_or_session, point_yx, layer="last", head="mean", query_level=1) -> AttentionResult:
    """Attention of the token at world ``point_yx`` (see module docstring); a `Recipe` opens a cached session."""
    session = recipe_or_session
    if not isinstance(session, AttentionSession):
        session = _session_for_recipe(recipe_or_session)
    entry, origin = session.entry_for(point_yx)
    result = probe_entry(entry, session.levels, session.patch_size, point_yx, layer, head, query_level)
    result.tile.update({"origin_yx": origin, "center_yx": entry["center"], "size": session.tile})
    result.info = {"num_layers": session.num_layers, "heads": session.heads, "forward_calls": session.forward_calls}
    return result


def open_session(source, model="demo", levels=None, *, tile=None, normalization=None, device="auto") -> AttentionSession:
    """Open the slide (path, array or `Pyramid`) and the model (folder, ``"demo"`` or a loaded model).

    Caps torch's threads at the engine's policy (`device.configure_threads`: cores - 1), as `predict` does:
    a click's small products lose to thread hand-offs when every core is busy, and a core stays for the GUI.
    """
    configure_threads()

    pyramid = source if isinstance(source, Pyramid) else open_pyramid(source)
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        model = load_model(str(model))
    levels = parse_levels(levels) if levels else None
    norm = Normalizer.from_dict(normalization) if normalization else None
    return AttentionSession(pyramid, model, levels=levels, tile=tile, normalizer=norm, device=device)


_LAST: dict = {}


def _session_for_recipe(recipe) -> AttentionSession:
    key = (recipe.source, recipe.model, recipe.levels, recipe.tile, str(recipe.normalization))
    if _LAST.get("key") != key:
        device = "cpu" if resolve_device(recipe.device).type == "cpu" else recipe.device
        _LAST["session"] = open_session(recipe.source, recipe.model, recipe.levels, tile=recipe.tile,
                                        normalization=recipe.normalization, device=device)
        _LAST["key"] = key
    return _LAST["session"]
