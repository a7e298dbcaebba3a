"""Per-tile operations shared by the in-process runner and the dask workers.

``read_batch`` (crops, normalised), ``run_batch`` (model, out-of-memory safe), ``commit_batch`` (scores,
scratch or direct writes), ``finalise_band`` (a dask worker stitches and writes one band from scratch) and
`BandWriter` (the in-process stitcher thread).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .band_convert import finish_band, finish_blocks
from .device import autocast, free_device_memory, is_oom
from .stitch import BandStitcher, band_to_host

MAX_GAP = 4  # tiles; farther-apart tiles of a row are read in separate windows (bounded memory)


def read_batch(ctx, tiles, pool: BufferPool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Crops of ``tiles [(i, j), ...]`` -> ``x (B, L, C, S, S) float32``, ``bbox (B, L, 2, 2) float32`` world px.

    Per grid row and level, one window covering all the row's crops is read and sliced (one read instead
    of one per tile); the crops are exactly `Pyramid.crops` (same start pixels, padding and normalisation).
    ``x`` comes from ``pool`` when given (hand it back with ``pool.give(x)`` once the model has read it).
    """
    from napari_muvit.data.geometry import nested_crop_boxes

    S = ctx.grid.tile
    L = len(ctx.levels)
    # every pixel is written below; page-locked beside a GPU so the copy to it can be asynchronous
    shape = (len(tiles), L, ctx.pyramid.n_channels, S, S)
    x = pool.take(shape) if pool is not None else host_buffer(shape, pinned=ctx.device.type == "cuda")
    bbox = np.zeros((len(tiles), L, 2, 2), np.float32)
    norm = ctx.normalizer if ctx.normalizer is not None and ctx.normalizer.policy != "none" else None
    low, span = norm.channel_bounds(shape[2:]) if norm is not None else (None, None)
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
        all_starts, boxes = nested_crop_boxes(centers, ctx.levels, S)  # (n, L, 2) pixel index, (n, L, 2, 2) world
        for li, f in enumerate(ctx.levels):
            starts = all_starts[:, li]
            lo, hi = starts.min(axis=0), starts.max(axis=0) + S
            window, ok = ctx.pyramid.read_window(f, (lo * f).tolist(), (hi - lo).tolist(), raw=True)
            padded = not ok.all()
            # normalisation is pointwise, so normalising a window equals normalising each crop of it: stored
            # integers are converted and normalised crop by crop straight into the batch (the same float32
            # operations as `Normalizer`, so the same values) unless the crops overlap so much (coarse levels:
            # neighbours share most of their context) that normalising the window once and copying is cheaper
            per_crop = norm is not None and window.dtype != np.float32 and 2 * window[0].size > len(members) * S * S
            if norm is not None and not per_crop:
                if window.dtype != np.float32:
                    window = np.subtract(window, low, dtype=np.float32)
                    np.divide(window, span, out=window)
                else:
                    window = norm.apply_(window)
                if padded:
                    window *= ok  # zero padding stays exactly zero after normalisation
            for n, (b, st) in enumerate(zip(members, starts)):
                oy, ox = st - lo
                src = window[:, oy : oy + S, ox : ox + S]
                if per_crop:
                    dst = x[b, li]
                    np.subtract(src, low, out=dst, dtype=np.float32)
                    np.divide(dst, span, out=dst)
                    if padded:
                        dst *= ok[oy : oy + S, ox : ox + S]
                else:
                    x[b, li] = src
                bbox[b, li] = boxes[n, li]
    for b, (i, j) in enumerate(tiles):
        origin = ctx.grid.tile_origin(i, j)
        if abs(float(bbox[b, 0, 0, 0]) - origin[0]) > 1e-3 or abs(float(bbox[b, 0, 0, 1]) - origin[1]) > 1e-3:
            raise RuntimeError(f"tile {(i, j)} crop starts at {bbox[b, 0, 0].tolist()}, expected {origin}")
    return x, bbox


class BufferPool:
    """Batches to reuse: input batches (numpy, `take`) and, on a CPU, probability batches (float32 torch
    tensors, `take_tensor`). A fresh 40 MB batch costs as much again as filling it (the kernel zeroes every
    new page), and page-locked memory beside a GPU is slow to allocate. Thread-safe; keeps at most ``keep``
    arrays and ``keep_tensors`` tensors (enough for the batches queued between the model and the stitcher)."""

    def __init__(self, pinned: bool = False, keep: int = 3, keep_tensors: int = 6):
        self.pinned, self.keep, self.keep_tensors = bool(pinned), int(keep), int(keep_tensors)
        self._free: list = []
        self._tensors: list = []
        self._lock = threading.Lock()

    def take(self, shape) -> np.ndarray:
        with self._lock:
            for k, a in enumerate(self._free):
                if a.shape == tuple(shape):
                    return self._free.pop(k)
        return host_buffer(shape, self.pinned)

    def take_tensor(self, shape) -> torch.Tensor:
        """An uninitialised float32 CPU tensor of ``shape``."""
        with self._lock:
            for k, t in enumerate(self._tensors):
                if t.shape == tuple(shape):
                    return self._tensors.pop(k)
        return torch.empty(tuple(shape), dtype=torch.float32)

    def give(self, a) -> None:
        """Hand back what `take` / `take_tensor` gave (a tuple or list: each item; anything else is ignored)."""
        if isinstance(a, (tuple, list)):
            for item in a:
                self.give(item)
            return
        with self._lock:
            if isinstance(a, np.ndarray) and len(self._free) < self.keep:
                self._free.append(a)
            elif (isinstance(a, torch.Tensor) and a.device.type == "cpu" and a.dtype == torch.float32
                  and a.is_contiguous() and len(self._tensors) < self.keep_tensors):
                self._tensors.append(a)


def host_buffer(shape, pinned: bool = False) -> np.ndarray:
    """An uninitialised float32 array; with ``pinned`` (and CUDA available) in page-locked memory."""
    if pinned and torch.cuda.is_available():
        return torch.empty(shape, dtype=torch.float32, pin_memory=True).numpy()
    return np.empty(shape, np.float32)


def run_batch(ctx, x: np.ndarray, bbox: np.ndarray, tiles, on_device: bool = False, buffers=None):
    """Model outputs for one batch; an out-of-memory error halves the batch and retries (down to 1).

    With ``on_device`` a segmentation batch's probabilities stay a torch tensor on the model's device
    (`BandWriter` blends, scores and quantises them there; on a CPU written into a tensor from ``buffers``, a
    `BufferPool`, when given); otherwise numpy."""
    try:
        xt, bt = ctx.batch_tensors(x, bbox)
        with autocast(ctx.device, ctx.dtype):
            if ctx.output.mode == "direct":
                idx = [ctx.grid.tile_index(i, j) for i, j in tiles]
                return ctx.output.run(ctx.model, xt, bt, idx)
            if on_device and ctx.output.mode == "blend":
                return ctx.output.probabilities(ctx.model, xt, bt, buffers)
            return ctx.output.run(ctx.model, xt, bt)
    except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled
        if not is_oom(exc) or len(tiles) == 1:
            raise
        free_device_memory(ctx.device)
        h = len(tiles) // 2
        ctx.extra["oom_halvings"] = ctx.extra.get("oom_halvings", 0) + 1
        a = run_batch(ctx, x[:h], bbox[:h], tiles[:h], on_device)
        b = run_batch(ctx, x[h:], bbox[h:], tiles[h:], on_device)
        if isinstance(a, torch.Tensor):
            return torch.cat([a, b])
        if isinstance(a, tuple):
            return (np.concatenate([a[0], b[0]]), None if a[1] is None else np.concatenate([a[1], b[1]]))
        return np.concatenate([a, b])


def commit_batch(ctx, store, tiles, outputs, wanted=None, scratch: bool = True) -> dict:
    """Persist a batch's outputs; returns ``{(i, j): scores}`` for the tiles in ``wanted``.

    blend: scores from each tile's own prediction; with ``scratch`` (dask workers) the ``(K, S, S)``
    prediction goes to the store's scratch space for the band writer.
    tile: scores returned (the image is written from them at the end).
    direct: the tile's owned tokens are written to the image; their mean RGB (+ MAE error) returned.
    """
    wanted = set(tiles) if wanted is None else set(wanted)
    out = {}
    mode = ctx.output.mode
    if mode == "blend":
        keep = [b for b, t in enumerate(tiles) if t in wanted]
        scores = ctx.output.tile_scores(ctx.grid, [tiles[b] for b in keep], outputs[keep])
        for s, b in zip(scores, keep):
            if scratch:
                store.write_scratch(*tiles[b], outputs[b])
            out[tiles[b]] = s
        return out
    for b, (i, j) in enumerate(tiles):
        if (i, j) not in wanted:
            continue
        if mode == "tile":
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
    return out


def finalise_band(ctx, store, b: int, state) -> int:
    """Stitch band ``b`` from the scratch predictions of every predicted tile whose crop overlaps it, in
    row-major order (exactly the in-process sums), and write it; returns ``b``."""
    from .store import BACKGROUND

    stitcher = BandStitcher(ctx.grid, ctx.layout, len(ctx.output.class_names))
    only = set(stitcher.written) | (set(ctx.layout.bands()) - {b})
    stitcher.written = only
    for i in ctx.grid.rows_touching(*ctx.layout.band_rows(b)):
        for j in np.flatnonzero(state[i] != BACKGROUND):
            pred = store.read_scratch(i, int(j))
            if pred is None:
                raise RuntimeError(f"prediction of tile {(i, int(j))} is missing from the store's scratch space")
            stitcher.add(i, int(j), pred)
    finish_blocks(store, ctx.grid, ctx.layout, b, stitcher.pop_blocks(b), state, BACKGROUND)
    return b


class BandWriter:
    """The in-process stitcher: a thread adds each batch's tile predictions (in submission order = row-major)
    to the open bands, computes tile scores, and hands complete bands to ``workers`` writer threads.

    ``submit(tiles, probs)``; ``collect()`` returns events since the last call, in order: ``("scores", tile,
    scores)`` and ``("band", b)`` once band ``b`` is on disk (the caller, sole owner of the run state,
    records them). Errors in the threads are re-raised by ``collect``/``close``.
    """

    def __init__(self, ctx, store, state, written, workers: int = 1, open_bands=(), release=None):
        from .store import BACKGROUND

        self.ctx, self.store, self.state, self._bg = ctx, store, state, BACKGROUND
        self.release = release  # called with a batch's ``keepalive`` once it is stitched (e.g. `BufferPool.give`)
        self.layout = ctx.layout
        self.stitcher = BandStitcher(ctx.grid, ctx.layout, len(ctx.output.class_names),
                                     [b for b in ctx.layout.bands() if written[b]], device=ctx.device)
        for b in open_bands:  # partial bands a cancelled run saved: continue their sums exactly
            self.stitcher.restore(b, store.load_band(b))
        self._bands = [b for b in ctx.layout.bands() if not written[b]]
        self._last = {b: self.stitcher.last_row(b) for b in self._bands}
        self._in: queue.Queue = queue.Queue(maxsize=4)
        self._out: queue.Queue = queue.Queue()
        self._error = None
        self._pool = ThreadPoolExecutor(max(1, int(workers)), thread_name_prefix="muvit-band")
        self._thread = threading.Thread(target=self._run, name="muvit-stitch", daemon=True)
        self._thread.start()

    def _flush(self, before_row):
        """Hand every band whose last contributing tile row is above ``before_row`` to the writers."""
        while self._bands and self._last[self._bands[0]] < before_row:
            b = self._bands.pop(0)
            self._pool.submit(self._write, b, self.stitcher.pop_blocks(b))

    def _write(self, b, blocks):
        try:
            finish_blocks(self.store, self.ctx.grid, self.layout, b, blocks, self.state, self._bg)
            self._out.put(("band", b, None))
            self.stitcher.recycle(blocks)  # written: its sums become later bands' (zeroed here, off the stitcher)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the owner thread
            self._error = exc

    def _run(self):
        while True:
            item = self._in.get()
            if item is None:
                return
            if self._error is not None:
                continue
            tiles, probs, final, keepalive = item
            try:
                if tiles:
                    scores = self.ctx.output.tile_scores(self.ctx.grid, tiles, probs)
                    for t, s in zip(tiles, scores):
                        self._out.put(("scores", t, s))
                    start = 0
                    for k in range(1, len(tiles) + 1):  # bands above a new tile row go to the writers first
                        if k == len(tiles) or tiles[k][0] != tiles[start][0]:
                            self._flush(tiles[start][0])
                            self.stitcher.add_batch(tiles[start:k], probs[start:k])
                            start = k
                # the scores came back from the device, so an asynchronous input copy has finished too
                self._release(keepalive)
                if final:
                    self._flush(float("inf"))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the owner thread
                self._error = exc

    def submit(self, tiles, probs, keepalive=None) -> None:
        """Queue a batch's ``probs (B, K, S, S)`` (numpy or torch on the model's device). ``keepalive`` (the
        batch's page-locked input, the pooled tensor holding ``probs``) is held until the batch is stitched,
        after its scores came back from the device, so an asynchronous copy from it has finished and the
        stitcher has read it before the buffer can be reused."""
        self._in.put((list(tiles), probs, False, keepalive))

    def _release(self, keepalive) -> None:
        if keepalive is not None and self.release is not None:
            self.release(keepalive)

    def collect(self) -> list:
        out = []
        while True:
            try:
                out.append(self._out.get_nowait())
            except queue.Empty:
                break
        if self._error is not None:
            raise self._error
        return out

    def close(self, complete: bool, keep_open: bool = False) -> list:
        """Stitch everything submitted; with ``complete`` write the remaining bands too. With ``keep_open``
        (a cancel) the partial bands are saved for a resume (``("open", b)`` events) and their current
        values written, so the store shows what was predicted. Returns the last events."""
        self._in.put(([], None, bool(complete), None))
        self._in.put(None)
        self._thread.join()
        self._pool.shutdown(wait=True)
        events = self.collect()
        if keep_open and not complete:
            for b, blocks in sorted(self.stitcher.open.items()):
                band = band_to_host(self.stitcher.assemble(blocks))
                self.store.save_band(b, band)
                finish_band(self.store, self.ctx.grid, self.layout, b, band, self.state, self._bg)
                events.append(("open", b, None))
        return events
