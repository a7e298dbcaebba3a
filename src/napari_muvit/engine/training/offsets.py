"""Scoring with nested but non-concentric context crops: true world boxes vs naive concentric boxes.

At inference the context crops are concentric with the level-1 tile, so "naive concentric boxes" equal
the true ones there. Here every coarser crop's centre is shifted at random (as far as nesting allows,
:func:`~.sampling.nested_centers`), the pixels are read at the shifted places, and the model is given
either the true world boxes of those pixels or the boxes the crops would have had if they were
concentric (what a model that ignores the offsets would assume). Only the world boxes say where the
level-1 tile lies inside its context.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ...data.geometry import nested_crop_boxes, tile_centres
from .annotations import IGNORE
from .evaluation import label_classes
from .metrics import ConfusionMatrix
from .runtime import autocast
from .sampling import NestedCropSampler, nested_centers

BOX_MODES = ("world", "concentric", "scale_blind")


def concentric_boxes(fine_centers: np.ndarray, levels: Sequence[int], size: int) -> np.ndarray:
    """World boxes ``(n, L, 2, 2)`` of 2D crops of every level centred on ``fine_centers (n, 2)`` world px."""
    centers = np.asarray(fine_centers, dtype=np.float64).reshape(-1, 2)
    return nested_crop_boxes(centers, [int(level) for level in levels], int(size))[1]


def offset_crops(pyramid, fine_centers: np.ndarray, levels: Sequence[int], size: int, rng: np.random.Generator,
                 normalizer=None, shift: float = 1.0):
    """Nested crops whose coarser levels are shifted at random around ``fine_centers (n, 2)`` world px.

    Returns ``img (n, L, C, size, size) float32``, the true world boxes ``(n, L, 2, 2)`` of the pixels
    read, the concentric boxes ``(n, L, 2, 2)`` (:func:`concentric_boxes`) and the centres ``(n, L, 2)``.
    ``shift`` scales the offsets (0 = concentric, 1 = as far as nesting allows).
    """
    centers = nested_centers(rng, np.asarray(fine_centers, dtype=np.float64), levels, size, shift)
    img, bbox = NestedCropSampler(pyramid, levels, size, None, rng, normalizer=normalizer).read(centers)
    return img.astype(np.float32), bbox.astype(np.float32), concentric_boxes(fine_centers, levels, size), centers


def _boxes_for(mode: str, world: np.ndarray, concentric: np.ndarray) -> np.ndarray:
    if mode == "world":
        return world
    if mode == "concentric":
        return concentric
    if mode == "scale_blind":  # every level gets the level-1 box
        return np.repeat(world[:, :1], world.shape[1], axis=1)
    raise ValueError(f"Unknown box mode {mode!r}; use one of {', '.join(BOX_MODES)}.")


@torch.no_grad()
def evaluate_offset_slide(model, pyramid, truth: np.ndarray, size: int, normalizer=None, modes=("world", "concentric"),
                          shift: float = 1.0, max_tiles: int | None = None, seed: int = 0, batch_size: int = 32,
                          device="cpu") -> dict:
    """Score ``model`` on level-1 tiles of ``pyramid`` with randomly shifted (nested) context crops.

    Every mode sees the same tiles and the same shifted pixels; only the boxes differ.
    truth: ``(Y, X)`` label image at level 1 (value ``k + 1`` = class ``k``, 0 = unknown). Tiles: the
    ``size`` px grid from world 0, a seeded subset of ``max_tiles``; offsets drawn from ``default_rng(seed + 7)``.
    Returns ``{mode: {"mDSC", "dice", "accuracy", "tiles"}}``.
    """
    for m in modes:
        _boxes_for(m, np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)))  # fail early on a bad mode
    levels = tuple(int(v) for v in model.encoder.levels)
    ny, nx = -(-truth.shape[0] // size), -(-truth.shape[1] // size)
    tiles = np.argwhere(np.ones((ny, nx), bool))
    if max_tiles is not None and len(tiles) > max_tiles:
        tiles = tiles[np.sort(np.random.default_rng(seed).choice(len(tiles), max_tiles, replace=False))]
    rng = np.random.default_rng(seed + 7)
    cms = {m: ConfusionMatrix(model.num_classes, IGNORE) for m in modes}
    model.eval().to(device)
    for i in range(0, len(tiles), batch_size):
        chunk = tiles[i : i + batch_size]
        img, world, concentric, _ = offset_crops(pyramid, tile_centres(chunk, size), levels, size, rng,
                                                 normalizer=normalizer, shift=shift)
        x = torch.from_numpy(img).to(device)
        for m in modes:
            bbox = torch.from_numpy(np.ascontiguousarray(_boxes_for(m, world, concentric))).to(device)
            with autocast(torch.device(device)):
                pred = model(x, bbox).float().argmax(1).cpu().numpy()
            for (ty, tx), p in zip(chunk, pred):
                t = label_classes(truth[ty * size : (ty + 1) * size, tx * size : (tx + 1) * size])
                cms[m].update(t, p[: t.shape[0], : t.shape[1]])
    return {m: {"mDSC": cm.mean_dice(), "dice": [float(d) for d in cm.dice()], "accuracy": cm.accuracy(),
                "tiles": int(len(tiles))} for m, cm in cms.items()}
