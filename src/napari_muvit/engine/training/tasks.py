"""Training data of the two fine-tuning tasks: dense segmentation from a label image, tile
classification from ROIs. Each yields augmented training batches and fixed validation batches whose
region (blocks of the slide, or whole ROIs) never overlaps the training region.
"""

from __future__ import annotations

import numpy as np

from .annotations import IGNORE, ROI, cell_mask_crop, check_classes, read_label_crop, region_split
from .augment import Augmenter
from .sampling import AreaSampler, NestedCropSampler


class SegmentationTask:
    """Nested crops around labelled pixels; targets are the level-1 crop's classes (``IGNORE`` elsewhere).

    ``labels``: lazy ``(Y, X)`` label image (0 = unlabelled, ``k`` = class ``k-1``).
    Targets: ``(n, S, S) int64`` for the finest crop (``levels[0]`` must be 1).
    """

    kind = "segmentation"

    def __init__(self, pyramid, labels, levels, size, class_names=None, val_fraction=0.2, seed=0,
                 normalizer=None, augment: Augmenter | None = None, shift=1.0, max_val_tiles=64):
        if levels[0] != 1:
            raise ValueError(f"Segmentation fine-tuning needs level 1 first (labels are full resolution), got {levels}.")
        self.pyramid, self.labels, self.levels, self.size = pyramid, labels, tuple(levels), int(size)
        self.normalizer, self.augment = normalizer, augment
        self.cell = max(4, self.size // 4)
        self.summary, self.class_names = check_classes(labels, class_names, self.cell)
        self.num_classes = len(self.class_names)
        self.train_cells, self.val_cells = region_split(self.summary, block_cells=8, val_fraction=val_fraction,
                                                        seed=seed)
        self.rng = np.random.default_rng(seed)
        self.sampler = NestedCropSampler(pyramid, self.levels, self.size, AreaSampler(self.train_cells, self.cell),
                                         self.rng, normalizer=normalizer, shift=shift)
        self.val_centers = self._val_tiles(max_val_tiles, seed)

    @property
    def train_labelled_px(self) -> int:
        counts = self.summary.counts[1:].sum(0)
        return int(counts[self.train_cells].sum())

    def _val_tiles(self, max_tiles: int, seed: int) -> np.ndarray:
        """Centres of level-1 tiles (a grid of ``size`` px) that touch validation cells."""
        if not self.val_cells.any():
            return np.zeros((0, 2))
        cells = np.argwhere(self.val_cells)
        tiles = np.unique((cells * self.cell) // self.size, axis=0)
        if len(tiles) > max_tiles:
            tiles = tiles[np.sort(np.random.default_rng(seed + 1).choice(len(tiles), max_tiles, replace=False))]
        from ...data.geometry import tile_centres

        return tile_centres(tiles, self.size)

    def _targets(self, center, region: np.ndarray) -> np.ndarray:
        lab = read_label_crop(self.labels, center, self.size)
        inside = cell_mask_crop(region, self.cell, center, self.size)
        return np.where((lab > 0) & inside, lab - 1, IGNORE).astype(np.int64)

    def train_batch(self, n: int):
        centers = self.sampler.sample_centers(n)
        img, bbox = self.sampler.read(centers)
        targets = np.stack([self._targets(c[0], self.train_cells) for c in centers])
        if self.augment is not None:
            out = [self.augment(self.rng, img[i], bbox[i], targets[i]) for i in range(n)]
            img, bbox, targets = (np.stack(a) for a in zip(*out))
        return img.astype(np.float32), bbox.astype(np.float32), targets

    def val_batches(self, batch_size: int):
        """Fixed validation batches: concentric crops on the validation tiles (as at inference)."""
        for i in range(0, len(self.val_centers), batch_size):
            chunk = self.val_centers[i : i + batch_size]
            crops = [self.pyramid.crops(tuple(c), self.levels, self.size, normalizer=self.normalizer) for c in chunk]
            img = np.stack([c[0] for c in crops]).astype(np.float32)
            bbox = np.stack([c[1] for c in crops]).astype(np.float32)
            yield img, bbox, np.stack([self._targets(c, self.val_cells) for c in chunk])


class ClassificationTask:
    """Crops centred on random points inside ROIs; the target is the ROI's class. Split by ROI."""

    kind = "classification"

    def __init__(self, pyramid, rois: list[ROI], levels, size, class_names=None, val_fraction=0.2, seed=0,
                 normalizer=None, augment: Augmenter | None = None, shift=1.0, val_points_per_roi=8):
        self.pyramid, self.levels, self.size = pyramid, tuple(levels), int(size)
        self.normalizer, self.augment = normalizer, augment
        names = sorted({r.label for r in rois})
        if class_names is None:
            class_names = names
        unknown = [n for n in names if n not in class_names]
        if unknown:
            raise ValueError(f"ROI class {unknown[0]!r} is not one of the classes {list(class_names)}.")
        missing = [n for n in class_names if n not in names]
        if missing:
            raise ValueError(f"Class {missing[0]!r} never occurs in the ROIs; annotate at least one ROI of it.")
        if len(class_names) < 2:
            raise ValueError(f"Tile classification needs at least two classes, the ROIs only have {list(class_names)}.")
        self.class_names, self.num_classes = list(class_names), len(class_names)
        self.rng = np.random.default_rng(seed)
        split_rng = np.random.default_rng(seed + 1)
        self.train_rois, self.val_rois = [], []
        for name in self.class_names:
            group = [r for r in rois if r.label == name]
            order = split_rng.permutation(len(group))
            n_val = int(round(val_fraction * len(group))) if len(group) >= 2 else 0
            n_val = min(max(n_val, 1 if len(group) >= 2 and val_fraction > 0 else 0), len(group) - 1)
            self.val_rois += [group[i] for i in order[:n_val]]
            self.train_rois += [group[i] for i in order[n_val:]]
        self._by_class = [[r for r in self.train_rois if r.label == n] for n in self.class_names]
        pts, tgt = [], []
        for r in self.val_rois:
            pts.append(r.sample_points(split_rng, val_points_per_roi))
            tgt += [self.class_names.index(r.label)] * val_points_per_roi
        self.val_points = np.concatenate(pts) if pts else np.zeros((0, 2))
        self.val_targets = np.asarray(tgt, dtype=np.int64)
        self.shift = shift

    def train_batch(self, n: int):
        from .sampling import nested_centers

        classes = self.rng.integers(self.num_classes, size=n)  # class-balanced
        fine = np.stack([
            self._by_class[k][self.rng.integers(len(self._by_class[k]))].sample_points(self.rng, 1)[0] for k in classes
        ])
        centers = nested_centers(self.rng, fine, self.levels, self.size, self.shift)
        sampler = NestedCropSampler(self.pyramid, self.levels, self.size, None, self.rng, normalizer=self.normalizer)
        img, bbox = sampler.read(centers)
        if self.augment is not None:
            out = [self.augment(self.rng, img[i], bbox[i]) for i in range(n)]
            img, bbox = (np.stack(a) for a in zip(*out))
        return img.astype(np.float32), bbox.astype(np.float32), classes.astype(np.int64)

    def val_batches(self, batch_size: int):
        for i in range(0, len(self.val_points), batch_size):
            chunk = self.val_points[i : i + batch_size]
            crops = [self.pyramid.crops(tuple(c), self.levels, self.size, normalizer=self.normalizer) for c in chunk]
            yield (np.stack([c[0] for c in crops]).astype(np.float32),
                   np.stack([c[1] for c in crops]).astype(np.float32), self.val_targets[i : i + batch_size])
