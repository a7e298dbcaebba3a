"""Slides opened for training: normalisers, foreground areas and batches of augmented nested crops."""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Callable, Sequence

import numpy as np

from napari_muvit.data.geometry import validate_crop_size, validate_levels

from .augment import Augmenter
from .sampling import AreaSampler, NestedCropSampler


def check_levels_available(pyramid, levels: Sequence[int], patch_size: int) -> None:
    """Raise ``ValueError`` when the slide cannot provide ``levels``.

    A level must be a multiple of one of the stored factors (checked by the reader) and the slide must
    still be at least one patch wide at that level, otherwise its crops would be padding only.
    """
    smallest = min(pyramid.shape[-2:])
    for lvl in levels:
        pyramid._stored_source_for(pyramid._target_factor(lvl))  # reader's own check and message
        if smallest // lvl < patch_size:
            raise ValueError(
                f"level {lvl} is too coarse for slide {pyramid.name!r} ({pyramid.shape[-2]} x {pyramid.shape[-1]} "
                f"px): it would be under one {patch_size}-px patch wide; use levels up to "
                f"{max(1, smallest // patch_size)}."
            )


def open_slides(sources) -> list:
    """Open each source (path, array, list of arrays or an existing Pyramid) as a Pyramid."""
    from napari_muvit.data import open_pyramid

    if isinstance(sources, (str, bytes)) or hasattr(sources, "crops") or isinstance(sources, np.ndarray):
        sources = [sources]
    return [s if hasattr(s, "crops") else open_pyramid(s) for s in sources]


def foreground_area(pyramid) -> AreaSampler:
    """Sampler of world points on the slide's foreground (whole slide when no foreground is found)."""
    try:
        from napari_muvit.data import foreground_mask
    except ImportError:  # reader without a foreground detector: sample the whole slide
        return AreaSampler(np.ones((1, 1), bool), cell=float(max(pyramid.shape[-2:])))
    mask, level = foreground_mask(pyramid)
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        mask = np.ones_like(mask)
    return AreaSampler(mask, cell=float(level))


class SlideBatches:
    """Augmented nested-crop batches drawn from one or more slides, area-weighted.

    ``next(n)`` -> ``img (n, L, C, S, S) float32``, ``bbox (n, L, 2, 2) float32`` world px.
    All randomness comes from ``self.rng`` (a numpy Generator) whose state is checkpointed.
    """

    def __init__(self, pyramids, levels, size, seed: int, normalizers=None, areas=None,
                 augment: Augmenter | None = None, shift: float = 1.0, patch_size: int | None = None):
        self.levels = validate_levels(levels)
        self.size = validate_crop_size(size, patch_size)
        self.pyramids = list(pyramids)
        channels = {p.n_channels for p in self.pyramids}
        if len(channels) > 1:
            raise ValueError(f"All slides must have the same number of channels, got {sorted(channels)}.")
        if patch_size is not None:
            for p in self.pyramids:
                check_levels_available(p, self.levels, patch_size)
        self.rng = np.random.default_rng(seed)
        self.areas = areas if areas is not None else [foreground_area(p) for p in self.pyramids]
        self.normalizers = normalizers if normalizers is not None else [None] * len(self.pyramids)
        self.samplers = [
            NestedCropSampler(p, self.levels, self.size, a, self.rng, normalizer=nz, shift=shift)
            for p, a, nz in zip(self.pyramids, self.areas, self.normalizers)
        ]
        weights = np.array([len(a.cells) * a.cell**2 for a in self.areas], dtype=float)
        self.weights = weights / weights.sum()
        self.augment = augment

    @property
    def foreground_px(self) -> float:
        """Total foreground area of all slides in level-1 pixels."""
        return float(sum(len(a.cells) * a.cell**2 for a in self.areas))

    def next(self, n: int):
        which = self.rng.choice(len(self.samplers), size=n, p=self.weights)
        imgs, boxes = [], []
        for i in which:
            img, bbox, _ = self.samplers[i].sample(1)
            img, bbox = img[0], bbox[0]
            if self.augment is not None:
                img, bbox = self.augment(self.rng, img, bbox)
            imgs.append(img)
            boxes.append(bbox)
        return np.stack(imgs).astype(np.float32), np.stack(boxes).astype(np.float32)


class Prefetcher:
    """Runs ``make()`` in a background thread, keeping up to ``depth`` batches ready, in order.

    ``get()`` returns ``(batch, rng_state)`` where ``rng_state`` is ``rng``'s state right after that
    batch was drawn, i.e. the state to checkpoint for an exact resume. Reading crops (numpy, dask) overlaps
    with the model step (torch releases the GIL).
    """

    def __init__(self, make: Callable, rng: np.random.Generator, depth: int = 2):
        self._make, self._rng = make, rng
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="muvit-prefetch", daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                item = (self._make(), copy.deepcopy(self._rng.bit_generator.state)), None
            except Exception as exc:  # handed to the consumer, raised there
                item = None, exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[1] is not None:
                return

    def get(self):
        item, exc = self._queue.get()
        if exc is not None:
            raise exc
        return item

    def close(self):
        self._stop.set()
        self._thread.join(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
