"""Run a recipe on several slides of the list in the background (`engine.batch.run_batch`).

The batch runs on an `EngineJob` thread: its progress (the job's ``progressed``) counts finished slides;
``slide_started(index)``, ``tiles(index, done, total)`` and ``slide_finished(index, status, error)`` (queued
to the GUI thread) give each slide's state and tile progress. Cancel stops at the next batch boundary and leaves
the current slide's store resumable; running again skips the slides whose stores are complete.
"""

from __future__ import annotations

import time

from qtpy.QtCore import QObject, Signal

from napari_muvit.widgets.workers import EngineJob

TILE_REPORT_S = 0.2  # at most five tile reports a second reach the GUI


def _run(slides, recipe, out_dir, bridge, *, progress, cancel):
    """Worker side: `run_batch` with its callbacks turned into the bridge's signals and slide counts."""
    from napari_muvit.engine.batch import run_batch

    started: set[int] = set()
    finished: list[int] = []
    last = [0.0]
    progress(0, len(slides))  # the job's own progress counts slides

    def tiles(index: int, done: int, total: int) -> None:
        if index not in started:
            started.add(index)
            bridge.slide_started.emit(index)
        now = time.perf_counter()
        if done >= total or now - last[0] >= TILE_REPORT_S:
            last[0] = now
            bridge.tiles.emit(index, int(done), int(total))

    def on_slide(index: int, _total: int, row) -> None:
        finished.append(index)
        bridge.slide_finished.emit(index, row.status, row.error)
        progress(len(finished), len(slides))

    return run_batch(slides, recipe, out_dir, progress=tiles, on_slide=on_slide, cancel=cancel)


class SlideBatch(QObject):
    """One batch over ``slides`` (paths) into ``out_dir`` with ``recipe``; see the module docstring."""

    slide_started = Signal(int)
    tiles = Signal(int, int, int)  # slide index, tiles done, tiles in the slide
    slide_finished = Signal(int, str, str)  # slide index, summary status, error sentence

    def __init__(self, slides, recipe, out_dir, parent=None):
        super().__init__(parent)
        self.slides = list(slides)
        self.job = EngineJob(_run, args=(self.slides, recipe, out_dir, self), description="MuViT slides",
                             unit="slides", parent=self)

    def start(self) -> SlideBatch:
        self.job.start()
        return self

    def cancel(self) -> None:
        self.job.cancel()

    @property
    def running(self) -> bool:
        return self.job.running


def _thumbnails(paths, bridge, *, progress, cancel):
    """Worker side: one `slide_list.thumbnail` per slide, each sent as soon as it is read."""
    from napari_muvit.engine.slide_list import thumbnail

    for i, path in enumerate(paths):
        if cancel():
            break
        try:
            rgb = thumbnail(path)
        except (ValueError, FileNotFoundError, OSError):  # the row already says why the slide cannot be read
            rgb = None
        bridge.thumbnail.emit(i, rgb)
        progress(i + 1, len(paths))


class ThumbnailLoader(QObject):
    """Reads the thumbnails of a slide list off the GUI thread; ``thumbnail(index, rgb or None)`` per slide."""

    thumbnail = Signal(int, object)

    def __init__(self, paths, parent=None):
        super().__init__(parent)
        self.job = EngineJob(_thumbnails, args=(list(paths), self), description="MuViT thumbnails",
                             unit="slides", parent=self)

    def start(self) -> ThumbnailLoader:
        self.job.start()
        return self
