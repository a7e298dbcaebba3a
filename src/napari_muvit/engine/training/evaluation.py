"""Scoring a segmentation model on a whole (synthetic or annotated) slide against dense ground truth.

Tiles the slide's level-1 crop grid (``size`` px tiles from world 0), feeds concentric context crops as
at inference, and accumulates a confusion matrix over every pixel with a known class.

Ground truth is a label image in the project's one convention (``docs/outputs.md``): value ``k + 1`` is
class ``k``, ``0`` is unlabelled and not scored; :func:`label_classes` turns it into the class indices the
confusion matrix counts (``IGNORE`` for 0), so the synthetic ``labels/ground_truth`` is passed as it is.
"""

from __future__ import annotations

import numpy as np
import torch

from .annotations import IGNORE
from .metrics import ConfusionMatrix
from .runtime import autocast


def label_classes(labels) -> np.ndarray:
    """Class index per pixel (int64) of a label image (value ``k + 1`` = class ``k``); 0 -> ``IGNORE``."""
    labels = np.asarray(labels).astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError(f"ground truth holds the negative label value {int(labels.min())}; use 0 for unlabelled "
                         "and k + 1 for class k.")
    return np.where(labels > 0, labels - 1, IGNORE)


def naive_boxes(bbox: np.ndarray) -> np.ndarray:
    """Replace every level's box by the finest crop's box ``(B, L, 2, 2)``: concentric and scale-blind."""
    return np.repeat(bbox[:, :1], bbox.shape[1], axis=1)


@torch.no_grad()
def evaluate_slide(model, pyramid, truth: np.ndarray, size: int, normalizer=None, batch_size: int = 32,
                   boxes: str = "world", max_tiles: int | None = None, seed: int = 0, device="cpu") -> dict:
    """mDSC, Dice per class and pixel accuracy of ``model`` on ``pyramid``.

    truth: ``(Y, X)`` label image at level 1: value ``k + 1`` = class ``k`` (``k < K``), 0 = unknown (not scored).
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
        from ...data.geometry import tile_centres

        centers = tile_centres(chunk, size)
        crops = [pyramid.crops(tuple(c), levels, size, normalizer=normalizer) for c in centers]
        img = np.stack([c[0] for c in crops]).astype(np.float32)
        bbox = np.stack([c[1] for c in crops]).astype(np.float32)
        if boxes == "naive":
            bbox = naive_boxes(bbox)
        with autocast(torch.device(device)):
            logits = model(torch.from_numpy(img).to(device), torch.from_numpy(bbox).to(device))
        pred = logits.float().argmax(1).cpu().numpy()
        for (ty, tx), p in zip(chunk, pred):
            t = label_classes(truth[ty * size : (ty + 1) * size, tx * size : (tx + 1) * size])
            cm.update(t, p[: t.shape[0], : t.shape[1]])
    return {"mDSC": cm.mean_dice(), "dice": [float(d) for d in cm.dice()], "accuracy": cm.accuracy(),
            "tiles": int(len(tiles))}
