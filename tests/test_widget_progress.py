"""One truthful progress source: skipped vs done before vs done now, a finishing phase, cancel, bar = text."""

from __future__ import annotations

import threading

import pytest

from napari_muvit.widgets.prediction_job import start_split
from napari_muvit.widgets.workers import EngineJob, Progress, gui_wording


class SteppedEngine:
    """A fake engine following the engine protocol; each `step()` lets it make one progress report."""

    def __init__(self, reports, result="ok"):
        self.reports = list(reports)
        self.result = result
        self.go = threading.Semaphore(0)
        self.late_reports = []  # (done, total) reported after a cancel, as batches in flight would

    def __call__(self, progress=None, cancel=None):
        for done, total in self.reports:
            self.go.acquire()
            if cancel():
                for late in self.late_reports:
                    progress(*late)
                return type("Result", (), {"cancelled": True})()
            progress(done, total)
        self.go.acquire()  # the "finishing" work after the last report
        return self.result

    def step(self, n=1):
        for _ in range(n):
            self.go.release()


@pytest.fixture
def seen(qtbot):
    return []


def _job(engine, seen, **kw):
    job = EngineJob(engine, description="MuViT test", **kw)
    job.progressed.connect(lambda now, todo, text: seen.append((now, todo, text)))
    return job


def test_progress_text_counts():
    st = Progress(unit="tiles", total=1849, skipped=498)
    assert (st.todo, st.remaining) == (1351, 1351)
    st.phase, st.now, st.rate = "running", 351, 10.0
    assert st.text() == "351/1351 tiles (498 background tiles skipped), 10.0 tiles/s, 1 min 40 s left"
    st.before = 100
    assert st.counts() == "351/1251 tiles (498 background tiles skipped, 100 done by the earlier run)"
    st.phase, st.phase_since = "finishing", 5.0
    assert st.text(now_s=12.0) == "finishing: all 1251 tiles computed, writing the last outputs… 7 s"
    assert start_split(False)(498) == (498, 0)  # a fresh run computed none of its first report's tiles
    assert start_split(True, 498)(600) == (498, 102)
    assert start_split(True, None)(600) == (0, 600)


def test_fresh_foreground_run_says_skipped_not_done_before(make_napari_viewer, qtbot, seen):
    from napari.utils import progress

    make_napari_viewer()  # a viewer with its activity dock, which the job must leave alone
    engine = SteppedEngine([(498, 1849), (598, 1849), (1849, 1849)])
    job = _job(engine, seen, start_counts=start_split(False)).start()
    engine.step()
    qtbot.waitUntil(lambda: job.state.phase == "running", timeout=5000)
    assert seen[-1][:2] == (0, 1351) and seen[-1][2].startswith("0/1351 tiles (498 background tiles skipped)")
    assert "done before" not in seen[-1][2] and "earlier run" not in seen[-1][2]
    engine.step()
    qtbot.waitUntil(lambda: seen[-1][0] == 100, timeout=5000)
    # the numbers of the text are the job's one state; napari's activity dock gets no second bar
    assert (job.state.now, job.state.todo) == (100, 1351) and len(progress._all_instances) == 0
    assert seen[-1][2].startswith("100/1351 tiles") and "left" in seen[-1][2]
    engine.step()  # the last tile: the job enters its finishing phase, the bar turns busy
    qtbot.waitUntil(lambda: job.state.phase == "finishing", timeout=5000)
    assert seen[-1][2].startswith("finishing: all 1351 tiles computed") and "0 s left" not in seen[-1][2]
    assert job.state.phase == "finishing" and len(progress._all_instances) == 0
    engine.step()
    qtbot.waitUntil(lambda: not job.running, timeout=5000)
    assert job.result == "ok" and job.state.phase == "ended"


def test_resumed_run_separates_skipped_and_done_before(make_napari_viewer, qtbot, seen):
    make_napari_viewer()
    engine = SteppedEngine([(700, 1849), (800, 1849)])
    job = _job(engine, seen, start_counts=start_split(True, 498)).start()
    engine.step(2)
    qtbot.waitUntil(lambda: bool(seen) and seen[-1][0] == 100, timeout=5000)
    assert seen[-1][:2] == (100, 1149)
    assert "(498 background tiles skipped, 202 done by the earlier run)" in seen[-1][2]
    job.cancel()
    engine.step()
    qtbot.waitUntil(lambda: not job.running, timeout=5000)


def test_cancelling_is_not_overwritten_by_a_late_report(make_napari_viewer, qtbot, seen):
    make_napari_viewer()
    engine = SteppedEngine([(0, 1351), (169, 1351), (300, 1351)])
    # batches in flight when the user pressed Cancel; the second comes too soon after the first to be sent
    engine.late_reports = [(190, 1351), (200, 1351)]
    job = _job(engine, seen, start_counts=start_split(False))
    at_outcome = []
    job.cancelled.connect(lambda _: at_outcome.append(job.state.now))  # what a widget's final line would say
    job.start()
    engine.step(2)
    qtbot.waitUntil(lambda: bool(seen) and seen[-1][0] == 169, timeout=5000)
    job.cancel()
    assert seen[-1][2].startswith("cancelling after the current batch… 169/1351 tiles")
    engine.step()
    qtbot.waitUntil(lambda: not job.running, timeout=5000)
    texts = [text for _, _, text in seen[seen.index(next(s for s in seen if s[2].startswith("cancelling"))):]]
    assert texts and all(t.startswith("cancelling") for t in texts), texts
    assert job.state.now == 200 and at_outcome == [200]  # the late count is kept, never as a "running" line
    assert all("left" not in t for t in texts)


def test_training_progress_never_claims_earlier_work(make_napari_viewer, qtbot, seen):
    """Training loops report after each step: the first report (1 step) is this run's work."""
    make_napari_viewer()
    engine = SteppedEngine([(1, 10), (2, 10), (3, 10)])
    job = _job(engine, seen, unit="steps").start()
    engine.step(3)
    qtbot.waitUntil(lambda: bool(seen) and seen[-1][0] == 3, timeout=5000)
    assert [s[:2] for s in seen if s[0] >= 1][0] == (1, 10)
    assert all("before" not in t and "earlier" not in t and "skipped" not in t for _, _, t in seen)
    assert seen[-1][2].startswith("3/10 steps")
    job.cancel()
    engine.step()
    qtbot.waitUntil(lambda: not job.running, timeout=5000)


def test_engine_sentences_speak_gui():
    said = gui_wording("Output folder /x/mae already exists; pass --resume to continue it or choose a new --out.")
    assert said == "Output folder /x/mae already exists; choose another folder under 'save to'."
    said = gui_wording("the disk is full (writing a.zarr); free space and run again with --resume to finish.")
    assert "--" not in said and "press Run again with the same settings" in said
