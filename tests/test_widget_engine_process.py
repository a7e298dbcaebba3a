"""The engine worker process (`ProcessJob`): records in order before one outcome, cancel, kill, crash, errors.

The jobs are `napari_muvit.engine.testing_jobs` (no torch), run in the real spawned worker process.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_muvit.widgets.engine_process import ProcessJob

JOBS = "napari_muvit.engine.testing_jobs"


@pytest.fixture
def run_job(qtbot):
    """Start a `ProcessJob`, collect its signals in order; returns (job, events)."""
    jobs = []

    def run(name, *args, **kw):
        events = []
        job = ProcessJob(f"{JOBS}:{name}", args=args, description="test job", **kw)
        job.recorded.connect(lambda row: events.append(("record", row)))
        job.succeeded.connect(lambda r: events.append(("succeeded", r)))
        job.cancelled.connect(lambda r: events.append(("cancelled", r)))
        job.failed.connect(lambda s: events.append(("failed", s)))
        job.ended.connect(lambda: events.append(("ended", None)))
        jobs.append(job.start())
        return job, events

    yield run
    for job in jobs:  # never leave a job running in the shared worker for the next test
        if job.running:
            job.cancel()
            qtbot.waitUntil(lambda j=job: not j.running, timeout=30_000)


def _outcomes(events):
    return [kind for kind, _ in events if kind in ("succeeded", "cancelled", "failed")]


def test_records_arrive_in_order_before_the_one_outcome(run_job, qtbot):
    job, events = run_job("stepped", 12, records=True)
    qtbot.waitUntil(lambda: ("ended", None) in events, timeout=60_000)
    rows = [payload for kind, payload in events if kind == "record"]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert [r["loss"] for r in rows] == pytest.approx([1 / s for s in range(1, 13)])
    np.testing.assert_array_equal(rows[4]["image"], np.full((2, 2), 5, np.uint8))  # arrays travel too
    assert rows[0]["pid"] != os.getpid()  # the job ran in the worker process
    kinds = [kind for kind, _ in events]
    assert kinds == ["record"] * 12 + ["succeeded", "ended"]
    result = events[-2][1]
    assert result["steps_done"] == 12 and result["pid"] == rows[0]["pid"]
    assert (job.done, job.total) == (12, 12)


def test_without_records_the_job_gets_no_on_record(run_job, qtbot):
    job, events = run_job("stepped", 3)
    qtbot.waitUntil(lambda: ("ended", None) in events, timeout=60_000)
    assert _outcomes(events) == ["succeeded"] and not [e for e in events if e[0] == "record"]


def test_cancel_stops_at_the_next_step_and_the_job_may_finish_saving(run_job, qtbot):
    # wrap_up_s: a job that read the flag gets that long to save (1.5 s here > the 1 s kill deadline)
    job, events = run_job("stepped", 100_000, records=True, wrap_up_s=30.0, kwargs={"wrap_up_s": 1.5})
    qtbot.waitUntil(lambda: job.done >= 5, timeout=60_000)
    job.cancel()
    qtbot.waitUntil(lambda: ("ended", None) in events, timeout=30_000)
    assert _outcomes(events) == ["cancelled"]
    result = events[-2][1]
    assert result is not None and result["cancelled"]  # returned by the job itself: it was not killed
    assert 5 <= result["steps_done"] < 100_000 and job.stopping_at is not None
    rows = [payload for kind, payload in events if kind == "record"]
    assert [r["step"] for r in rows] == list(range(1, result["steps_done"] + 1))
    assert events.index(("cancelled", result)) > max(i for i, e in enumerate(events) if e[0] == "record")


def test_a_job_that_ignores_cancel_is_terminated_and_ends_cancelled(run_job, qtbot):
    job, events = run_job("ignores_cancel", 600.0, wrap_up_s=30.0)
    qtbot.waitUntil(lambda: job.done == 1, timeout=60_000)
    job.cancel()
    qtbot.waitUntil(lambda: ("ended", None) in events, timeout=30_000)
    assert _outcomes(events) == ["cancelled"] and events[-2][1] is None and job.stopping_at is None
    job2, events2 = run_job("stepped", 2)  # the next job gets a fresh worker
    qtbot.waitUntil(lambda: ("ended", None) in events2, timeout=60_000)
    assert _outcomes(events2) == ["succeeded"]


def test_a_user_error_comes_back_as_its_sentence(run_job, qtbot):
    sentence = "The model folder 'nowhere' does not exist; choose a model folder or 'demo'."
    job, events = run_job("fails_with", sentence, records=True)
    qtbot.waitUntil(lambda: ("ended", None) in events, timeout=60_000)
    assert [kind for kind, _ in events] == ["failed", "ended"] and events[0][1] == sentence == job.error


def test_a_crashed_worker_ends_the_job_with_a_sentence(run_job, qtbot):
    job, events = run_job("crashes")
    qtbot.waitUntil(lambda: ("ended", None) in events, timeout=60_000)
    assert _outcomes(events) == ["failed"]
    message = events[0][1]
    assert message.startswith("the MuViT worker process stopped unexpectedly (exit code 3)") and "\n" not in message


def test_a_result_that_cannot_be_sent_fails_the_job_instead_of_hanging(run_job, qtbot):
    job, events = run_job("unpicklable_result")
    qtbot.waitUntil(lambda: ("ended", None) in events, timeout=60_000)
    assert _outcomes(events) == ["failed"]
    assert events[0][1].startswith("TypeError: the result cannot be sent back") and "\n" not in events[0][1]


def test_a_job_waiting_in_the_queue_is_cancelled_alone(run_job, qtbot):
    """Two docks' jobs share the worker: cancelling the waiting one ends it at once, the running one goes on."""
    first, events1 = run_job("stepped", 40, records=True, kwargs={"step_s": 0.05})
    second, events2 = run_job("stepped", 3, records=True)
    qtbot.waitUntil(lambda: first.done >= 2, timeout=60_000)
    assert second.worker_pid is None and second.done == 0  # still waiting behind the first
    second.cancel()
    qtbot.waitUntil(lambda: ("ended", None) in events2, timeout=5_000)
    assert [kind for kind, _ in events2] == ["cancelled", "ended"] and events2[0][1] is None
    assert first.running
    qtbot.waitUntil(lambda: ("ended", None) in events1, timeout=60_000)
    assert _outcomes(events1) == ["succeeded"] and events1[-2][1]["steps_done"] == 40
    assert [r["step"] for kind, r in events1 if kind == "record"] == list(range(1, 41))


def test_cancelling_the_running_job_lets_the_waiting_one_run(run_job, qtbot):
    first, events1 = run_job("ignores_cancel", 600.0)  # will have to be terminated
    second, events2 = run_job("stepped", 3, records=True)
    qtbot.waitUntil(lambda: first.done == 1, timeout=60_000)
    first.cancel()
    qtbot.waitUntil(lambda: ("ended", None) in events1 and ("ended", None) in events2, timeout=60_000)
    assert _outcomes(events1) == ["cancelled"] and events1[-2][1] is None
    assert _outcomes(events2) == ["succeeded"] and events2[-2][1]["steps_done"] == 3  # ran in the new worker
    assert second.worker_pid not in (None, first.worker_pid, os.getpid())
