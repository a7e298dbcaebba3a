"""Background prefetcher: reads, resamples and normalises upcoming batches while the model runs."""

from __future__ import annotations

import queue
import threading

_END = object()


class Prefetcher:
    """Iterate ``(batch, read(batch))`` over ``batches``, reading up to ``depth`` batches ahead in a thread.

    An exception raised by ``read`` is re-raised in the consuming thread. ``close()`` stops the thread
    promptly (used on cancel), so cancelling never waits for more than the batch being read.
    """

    def __init__(self, read, batches, depth: int = 2):
        self._read = read
        self._batches = list(batches)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
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
        for batch in self._batches:
            if self._stop.is_set():
                return
            try:
                item = (batch, self._read(batch), None)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                self._put((batch, None, exc))
                return
            if not self._put(item):
                return
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
