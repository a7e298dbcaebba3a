"""Scoring a segmentation model on a whole (synthetic or annotated) slide against dense ground truth.

Tiles the slide's level-1 crop grid (``size`` px tiles from world 0), feeds concentric context crops as
at inference, and accumulates a confusion matrix over every pixel with a known class.
"""

from __future__ import annotations

import numpy as np
import torch

from .annotations import IGNORE
from .metrics import ConfusionMatrix
from .runtime import autocast


def naive_boxes(bbox: np.ndarray) -> np.ndarray:
    """Replace every level's box by the finest crop's box ``(B, L, 2, 2)``: concentric and scale-blind."""
    return np.repeat(bbox[:, :1], bbox.shape[1], axis=1)


@torch.no_grad()
def evaluate_slide(model, pyramid, truth: np.ndarray, size: int, normalizer=None, batch_size: int = 32,
                   boxes: str = "world", max_tiles: int | None = None, seed: int = 0, device="cpu") -> dict:
    """mDSC, Dice per class and pixel accuracy of ``model`` on ``pyramid``.

    truth: ``(Y, X)`` class indices ``0..K-1`` at level 1 (``IGNORE`` = unknown pixel).
    boxes: ``"world"`` (true world boxes) or ``"naive"`` (see :func:`naive_boxes`).
    max_tiles: score a fixed random subset of tiles (seeded) instead of all of them.
    Returns a dict with ``mDSC``, ``dice`` (list per class), ``accuracy``, ``tiles``.
    """
    levels = tuple(int(v) for v in model.encoder.levels)
    ny, nx = -(-truth.shape[0] // size), -(-truth.shape[1] // size)
    tiles = np.argwhere(np.ones((ny, nx), bool))
    if max_tiles is not None and len(tiles) > max_tiles:
        tiles = tiles[np.sort(np.random.default_rng(seed).choice(len(tiles), max_tiles, replace=False))]
    cm = ConfusionMatrix(model.num_classes, IGNORE)
    model.eval().to(device)
    for i in range(0, len(tiles), batch_size):
        chunk = tiles[i : i + batch_size]
        centers = chunk * size + (size - 1) / 2.0
        crops = [pyramid.crops(tuple(c), levels, size, normalizer=normalizer) for c in centers]
        img = np.stack([c[0] for c in crops]).astype(np.float32)
        bbox = np.stack([c[1] for c in crops]).astype(np.float32)
        if boxes == "naive":
            bbox = naive_boxes(bbox)
        with autocast(torch.device(device)):
            logits = model(torch.from_numpy(img).to(device), torch.from_numpy(bbox).to(device))
        pred = logits.float().argmax(1).cpu().numpy()
        for (ty, tx), p in zip(chunk, pred):
            t = truth[ty * size : (ty + 1) * size, tx * size : (tx + 1) * size]
            cm.update(t, p[: t.shape[0], : t.shape[1]])
    return {"mDSC": cm.mean_dice(), "dice": [float(d) for d in cm.dice()], "accuracy": cm.accuracy(),
            "tiles": int(len(tiles))}
