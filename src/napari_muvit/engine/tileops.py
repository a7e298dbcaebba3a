"""Per-tile operations shared by the in-process runner and the dask workers.

``read_batch`` (crops, normalised), ``run_batch`` (model, out-of-memory safe), ``commit_batch`` (scratch or
direct writes) and ``finalise_tiles`` (blend owned chunks from their neighbours and write them).
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict

import numpy as np

from .device import autocast, free_device_memory, is_oom

MAX_GAP = 4  # tiles; farther-apart tiles of a row are read in separate windows (bounded memory)


def read_batch(ctx, tiles) -> tuple[np.ndarray, np.ndarray]:
    """Crops of ``tiles [(i, j), ...]`` -> ``x (B, L, C, S, S) float32``, ``bbox (B, L, 2, 2) float32`` world px.

    Per grid row and level, one window covering all the row's crops is read and sliced (one read instead
    of one per tile); the crops are exactly `Pyramid.crops` (same start pixels, padding and normalisation).
    """
    from napari_muvit.data.geometry import crop_bbox, crop_start_index

    S = ctx.grid.tile
    L = len(ctx.levels)
    x = np.zeros((len(tiles), L, ctx.pyramid.n_channels, S, S), np.float32)
    valid = np.zeros((len(tiles), L, S, S), bool)
    bbox = np.zeros((len(tiles), L, 2, 2), np.float32)
    rows: dict = {}
    for b, (i, j) in enumerate(tiles):
        rows.setdefault(i, []).append((j, b))
    groups = []
    for cols in rows.values():  # a window per run of nearby tiles: a gap (background) starts a new one
        cols.sort()
        groups.append([cols[0][1]])
        for (j0, _), (j1, b) in zip(cols, cols[1:]):
            if j1 - j0 > MAX_GAP:
                groups.append([])
            groups[-1].append(b)
    for members in groups:
        centers = np.array([ctx.grid.tile_center(*tiles[b]) for b in members])
        for li, f in enumerate(ctx.levels):
            starts = crop_start_index(centers, f, S)  # (n, 2) pixel index at this level
            lo, hi = starts.min(axis=0), starts.max(axis=0) + S
            window, ok = ctx.pyramid.read_window(f, (lo * f).tolist(), (hi - lo).tolist())
            for b, st in zip(members, starts):
                oy, ox = st - lo
                x[b, li] = window[:, oy : oy + S, ox : ox + S]
                valid[b, li] = ok[oy : oy + S, ox : ox + S]
                bbox[b, li] = crop_bbox(st, f, S)
    if ctx.normalizer is not None:
        for b in range(len(tiles)):  # per tile (L, C, S, S): the normaliser's own 2D layout
            x[b] = ctx.normalizer(x[b])
        x *= valid[:, :, None]  # zero padding stays exactly zero after normalisation
    for b, (i, j) in enumerate(tiles):
        origin = ctx.grid.tile_origin(i, j)
        if abs(float(bbox[b, 0, 0, 0]) - origin[0]) > 1e-3 or abs(float(bbox[b, 0, 0, 1]) - origin[1]) > 1e-3:
            raise RuntimeError(f"tile {(i, j)} crop starts at {bbox[b, 0, 0].tolist()}, expected {origin}")
    return x, bbox


def run_batch(ctx, x: np.ndarray, bbox: np.ndarray, tiles):
    """Model outputs for one batch; an out-of-memory error halves the batch and retries (down to 1)."""
    try:
        xt, bt = ctx.batch_tensors(x, bbox)
        with autocast(ctx.device, ctx.dtype):
            if ctx.output.mode == "direct":
                idx = [ctx.grid.tile_index(i, j) for i, j in tiles]
                return ctx.output.run(ctx.model, xt, bt, idx)
            return ctx.output.run(ctx.model, xt, bt)
    except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled
        if not is_oom(exc) or len(tiles) == 1:
            raise
        free_device_memory(ctx.device)
        h = len(tiles) // 2
        ctx.extra["oom_halvings"] = ctx.extra.get("oom_halvings", 0) + 1
        a = run_batch(ctx, x[:h], bbox[:h], tiles[:h])
        b = run_batch(ctx, x[h:], bbox[h:], tiles[h:])
        if isinstance(a, tuple):
            return (np.concatenate([a[0], b[0]]), None if a[1] is None else np.concatenate([a[1], b[1]]))
        return np.concatenate([a, b])


def commit_batch(ctx, store, tiles, outputs, wanted=None, cache=None) -> dict:
    """Persist a batch's outputs; returns ``{(i, j): scores or None}`` for the tiles in ``wanted``.

    blend: each tile's ``(K, S, S)`` goes to scratch, or with a ``cache`` into it, pinned until persisted
    (None returned: scored when blended).
    tile: scores returned (the image is written from them at the end).
    direct: the tile's owned tokens are written to the image; their mean RGB (+ MAE error) returned.
    """
    wanted = set(tiles) if wanted is None else set(wanted)
    out = {}
    mode = ctx.output.mode
    for b, (i, j) in enumerate(tiles):
        if (i, j) not in wanted:
            continue
        if mode == "blend":
            if cache is not None:  # written by `PredictionCache.persist` before the next state save, if still needed
                cache.put((i, j), outputs[b], pinned=True)
            else:
                store.write_scratch(i, j, outputs[b])
            out[(i, j)] = None
        elif mode == "tile":
            out[(i, j)] = np.asarray(outputs[b], np.float32)
        else:
            rgb, err = outputs
            (ys, xs), box = ctx.output.owned_tokens(ctx.grid, i, j)
            block = rgb[b][:, ys, xs]
            store.write_block(box, block)
            scores = block.reshape(3, -1).mean(axis=1).tolist()
            if err is not None:
                scores.append(float(err[b]))
            out[(i, j)] = np.asarray(scores, np.float32)
    if cache is not None and mode == "blend" and cache.pinned_bytes > cache.max_bytes:
        cache.persist(store)  # bounded memory: extra scratch files are harmless (removed at the end)
    return out


def blend_tile(ctx, store, i, j, neighbours_present, cache=None):
    """Blended chunk ``(i, j)`` from its present neighbours' predictions -> ``(values, labels, scores)``."""
    preds = {}
    for n in neighbours_present:
        p = cache.get(n) if cache is not None else None
        if p is None:
            p = store.read_scratch(*n)
            if p is None:
                raise RuntimeError(f"prediction of tile {n} is missing from the store's scratch space")
            if cache is not None:
                cache.put(n, p)
        preds[n] = p
    return ctx.output.chunk(ctx.grid.blend(i, j, preds))


def finalise_tiles(ctx, store, jobs, cache=None) -> dict:
    """Blend and write the chunks of ``jobs [(tile, neighbours), ...]``; returns ``{tile: scores}``.

    Runs of consecutive chunks in a row are written with one call per array (fewer, larger writes; still
    exactly the jobs' own chunks).
    """
    blocks = {tuple(t): blend_tile(ctx, store, *t, nbrs, cache) for t, nbrs in jobs}
    runs: list = []
    for t in sorted(blocks):
        if runs and runs[-1][-1][0] == t[0] and runs[-1][-1][1] + 1 == t[1]:
            runs[-1].append(t)
        else:
            runs.append([t])
    for run in runs:
        a0, a1, b0, _ = ctx.grid.owned(*run[0])
        b1 = ctx.grid.owned(*run[-1])[3]
        values = np.concatenate([blocks[t][0] for t in run], axis=-1)
        labels = np.concatenate([blocks[t][1] for t in run], axis=-1)
        store.write_block((a0, a1, b0, b1), values, labels)
    return {t: b[2] for t, b in blocks.items()}


class PredictionCache:
    """Thread-safe LRU of recent ``(K, S, S)`` tile predictions so blending rarely re-reads scratch.

    Bounded by ``max_items`` and by ``max_bytes``. Blending a row of chunks needs the predictions of the
    row above and below, so `for_grid` sizes it to three grid rows plus the batches in flight.
    Entries put with ``pinned=True`` are not yet in the store's scratch space: they are never evicted,
    and `persist` writes them there (the run calls it right before saving its state, so the state file
    never names a prediction that is only in memory). A prediction no chunk needs any more by then
    (`discard`) is never written at all. Pinned data above ``max_bytes`` is persisted at once
    (`commit_batch`), so memory stays bounded on wide grids and fast devices.
    """

    def __init__(self, max_items: int = 64, max_bytes: int = 256 << 20):
        self.max_items = max_items
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.pinned_bytes = 0
        self._items: OrderedDict = OrderedDict()
        self._pinned: set = set()
        self._lock = threading.Lock()

    @classmethod
    def for_grid(cls, grid, batch_size: int, max_bytes: int = 256 << 20) -> PredictionCache:
        return cls(max_items=3 * grid.grid_shape[1] + 4 * max(1, int(batch_size)) + 8, max_bytes=max_bytes)

    def get(self, key):
        with self._lock:
            v = self._items.get(key)
            if v is not None:
                self._items.move_to_end(key)
            return v

    def put(self, key, value, pinned: bool = False):
        with self._lock:
            self._pop(key)
            self._items[key] = value
            self.nbytes += int(value.nbytes)
            if pinned:
                self._pinned.add(key)
                self.pinned_bytes += int(value.nbytes)
            while len(self._items) > self.max_items or self.nbytes > self.max_bytes:
                victim = next((k for k in self._items if k not in self._pinned), None)
                if victim is None or victim == key:
                    break
                self._pop(victim)

    def _pop(self, key):
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= int(old.nbytes)
            if key in self._pinned:
                self.pinned_bytes -= int(old.nbytes)
        self._pinned.discard(key)

    def discard(self, key) -> None:
        """Forget a prediction no chunk needs any more (if it was never written, it never will be)."""
        with self._lock:
            self._pop(key)

    def persist(self, store) -> int:
        """Write every pinned prediction to the store's scratch space; returns how many were written."""
        with self._lock:
            todo = [(k, self._items[k]) for k in self._pinned]
        for (i, j), value in todo:
            store.write_scratch(i, j, value)
        with self._lock:
            for k, value in todo:
                if k in self._pinned and self._items.get(k) is value:
                    self._pinned.discard(k)
                    self.pinned_bytes -= int(value.nbytes)
        return len(todo)


class BlendWriter:
    """Blends and writes ready chunks on a background thread while the model runs the next batch.

    ``submit(tile, neighbours)`` queues a chunk; ``collect()`` returns the ``[(tile, scores)]`` finished
    since the last call (the caller, the only owner of the run's state, records them). An error in the
    thread is re-raised by the next ``collect``/``close``.
    """

    def __init__(self, ctx, store, cache, workers: int = 1):
        self.ctx, self.store, self.cache = ctx, store, cache
        self._jobs: queue.Queue = queue.Queue()
        self._done: queue.Queue = queue.Queue()
        self._error = None
        self.queued: set = set()
        self._threads = [threading.Thread(target=self._run, name=f"muvit-writer-{k}", daemon=True)
                         for k in range(max(1, int(workers)))]
        for t in self._threads:  # distinct chunks per job: writers never touch the same chunk
            t.start()

    def _run(self, group: int = 16):
        stop = False
        while not stop:
            jobs = [self._jobs.get()]
            while len(jobs) < group:  # take what is queued: neighbouring chunks are written together
                try:
                    jobs.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            if None in jobs:  # one stop sentinel per thread: hand the others back
                stop = True
                for _ in range(jobs.count(None) - 1):
                    self._jobs.put(None)
                jobs = [j for j in jobs if j is not None]
            if not jobs:
                continue
            try:
                for tile, scores in finalise_tiles(self.ctx, self.store, jobs, self.cache).items():
                    self._done.put((tile, scores))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the owner thread
                self._error = exc

    def submit(self, tile, neighbours):
        if tile not in self.queued:
            self.queued.add(tile)
            self._jobs.put((tile, neighbours))

    def collect(self) -> list:
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                break
        if self._error is not None:
            raise self._error
        return out

    def close(self) -> list:
        """Finish every queued chunk, stop the thread, return the last results."""
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join()
        return self.collect()
