"""Background prefetcher: reads, resamples and normalises upcoming batches while the model runs."""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

_END = object()


class Prefetcher:
    """Iterate ``(batch, read(batch))`` over ``batches`` (any iterable, consumed lazily) in order, reading up
    to ``depth`` batches ahead.

    ``workers`` threads read concurrently (1 on a CPU run, where the model needs the cores; more when a GPU
    runs the model and the CPU only feeds it). An exception raised by ``read`` is re-raised in the
    consuming thread. ``close()`` stops promptly (used on cancel).
    """

    def __init__(self, read, batches, depth: int = 2, workers: int = 1):
        self._read = read
        self._batches = batches  # any iterable, consumed lazily (a whole slide's batches are never listed)
        self._workers = max(1, int(workers))
        self._depth = max(1, depth, self._workers + 1)
        self._queue: queue.Queue = queue.Queue(maxsize=self._depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="muvit-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self):
        with ThreadPoolExecutor(self._workers, thread_name_prefix="muvit-read") as pool:
            pending: deque = deque()
            batches = iter(self._batches)
            while True:
                while len(pending) < self._depth and not self._stop.is_set():
                    batch = next(batches, None)
                    if batch is None:
                        break
                    pending.append((batch, pool.submit(self._read, batch)))
                if not pending or self._stop.is_set():
                    break
                batch, future = pending.popleft()
                try:
                    item = (batch, future.result(), None)
                except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                    self._put((batch, None, exc))
                    return
                if not self._put(item):
                    break
            for _, future in pending:
                future.cancel()
        self._put(_END)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is _END:
                return
            batch, data, exc = item
            if exc is not None:
                raise exc
            yield batch, data

    def close(self):
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._thread.join(timeout=5)
