"""GUI responsiveness during a prediction from the dock widget: QTimer heartbeat gaps and cancel latency.

A 20 ms QTimer (``--interval-ms``) ticks on the GUI thread while the predict widget runs on the synthetic
sample slide; any work on the GUI thread (or starvation by the worker) shows up as a long gap between
ticks. A second run is cancelled after a few tiles to time how long the cancel takes to end the job.
Opening each dock (predict, attention, teach, slides) is timed the same way (``open_docks``).

Where a long gap comes from: a sampler thread reads the GUI thread's Python stack whenever the heartbeat
is more than ``--sample-after-ms`` late, and each run reports the stack seen during its worst gap
(``worst_gap_cause``) and the frames most often seen in all gaps over 100 ms (``gap_causes``). A gap
with no sample was spent outside Python (painting, OpenGL) or waiting for the GIL.

Run under a display, e.g.:
    xvfb-run -a python benchmarks/heartbeat.py --model demo --size 2048 --region whole
    xvfb-run -a python benchmarks/heartbeat.py --teach --size 1024 --cancel-after 3   # the teach dock
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time


def _args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo", help="'demo', a model folder, or 'tiny' (random, demo geometry)")
    p.add_argument("--size", type=int, default=2048, help="sample slide side in px")
    p.add_argument("--region", default="1024", help="'whole' or the side of a centred square region in px")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--cancel-after", type=int, default=8, help="tiles done before the cancel request")
    p.add_argument("--no-live", action="store_true", help="untick 'show results while running'")
    p.add_argument("--teach", action="store_true",
                   help="the teach dock instead: pre-train on the slide, cancel after --cancel-after steps")
    p.add_argument("--interval-ms", type=int, default=20, help="heartbeat timer interval")
    p.add_argument("--sample-after-ms", type=int, default=60,
                   help="sample the GUI thread's stack while the heartbeat is this late")
    p.add_argument("--no-docks", action="store_true", help="skip timing the opening of each dock")
    p.add_argument("--docks-only", action="store_true", help="time the opening of each dock, then stop")
    p.add_argument("--idle-s", type=float, default=5.0,
                   help="first, the heartbeat of the idle viewer this long (the machine's own floor)")
    p.add_argument("--engine-only", action="store_true",
                   help="no viewer: the engine in a worker thread vs the worker process, heartbeat only")
    return p.parse_args()


class GapSampler:
    """Samples the GUI thread's stack while the heartbeat is late (a daemon thread; needs the GIL now and
    then, so a GUI thread that holds the GIL in C code shows up as a gap without samples)."""

    def __init__(self, late_ms: float = 60.0, period_ms: float = 10.0):
        import sys
        import threading

        self._sys = sys
        self.late_s, self.period_s = late_ms / 1000, period_ms / 1000
        self.main_id = threading.main_thread().ident
        self.last_tick = time.perf_counter()
        self.samples: list[tuple[float, tuple[str, ...]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat-sampler", daemon=True)
        self._thread.start()

    def tick(self) -> None:
        self.last_tick = time.perf_counter()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            now = time.perf_counter()
            if now - self.last_tick < self.late_s:
                continue
            frame = self._sys._current_frames().get(self.main_id)
            stack = []
            while frame is not None:
                code = frame.f_code
                stack.append(f"{_short(code.co_filename)}:{frame.f_lineno} {code.co_name}")
                frame = frame.f_back
            self.samples.append((now, tuple(stack)))  # innermost first

    def stop(self) -> None:
        self._stop.set()

    def causes(self, ticks, gaps_ms, over_ms: float = 100.0, depth: int = 10) -> dict:
        """The stack of the worst gap and the innermost project/napari frames most seen in long gaps."""
        from collections import Counter

        import numpy as np

        if len(ticks) < 2:
            return {}
        ticks = np.asarray(ticks)
        worst = int(np.argmax(gaps_ms))

        def inside(k):
            return [st for t, st in self.samples if ticks[k] < t <= ticks[k + 1]]

        in_worst = inside(worst)
        common = Counter(in_worst).most_common(1)
        counter: Counter = Counter()
        for k in np.nonzero(np.asarray(gaps_ms) > over_ms)[0]:
            for st in set(inside(int(k))):
                counter[_key_frame(st)] += 1
        return {
            "worst_gap_ms": round(float(gaps_ms[worst]), 1),
            "worst_gap_samples": len(in_worst),
            "worst_gap_cause": list(common[0][0][:depth]) if common else "no Python stack sampled (C code, "
                                                                         "painting or waiting for the GIL)",
            "gap_causes": [f"{n}x {frame}" for frame, n in counter.most_common(6)],
        }


def _short(path: str) -> str:
    for mark in ("site-packages/", "src/", "lib/python"):
        if mark in path:
            return path.split(mark, 1)[1]
    return path.rsplit("/", 2)[-1]


def _key_frame(stack: tuple[str, ...]) -> str:
    """The innermost frame of this project (else of napari/vispy/Qt glue) and the innermost frame overall."""
    for prefix in ("napari_muvit/", "napari/", "vispy/", "magicgui/"):
        for frame in stack:
            if frame.startswith(prefix):
                return frame if frame == stack[0] else f"{frame} > {stack[0]}"
    return stack[0] if stack else "?"


def _heartbeat(interval_ms: int, sampler: GapSampler, ticks: list):
    """A started QTimer that appends each tick's time to ``ticks`` and tells ``sampler``."""
    from qtpy.QtCore import QTimer

    def beat():
        ticks.append(time.perf_counter())
        sampler.tick()

    timer = QTimer()
    timer.setInterval(interval_ms)
    timer.timeout.connect(beat)
    timer.start()
    return timer


def _pump(app, seconds: float) -> None:
    """Run the Qt event loop for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.001)


def idle(seconds: float, interval_ms: int, sampler: GapSampler) -> dict:
    """The same heartbeat while nothing runs: what the machine's load alone costs (the floor of every gap)."""
    import numpy as np
    from qtpy.QtWidgets import QApplication

    ticks: list[float] = []
    timer = _heartbeat(interval_ms, sampler, ticks)
    _pump(QApplication.instance(), seconds)
    timer.stop()
    gaps = np.diff(np.asarray(ticks)) * 1000 if len(ticks) > 1 else np.array([0.0])
    return {"seconds": seconds, "max_gap_ms": round(float(gaps.max()), 1),
            "p99_gap_ms": round(float(np.percentile(gaps, 99)), 1), "gaps_over_100ms": int((gaps > 100).sum())}


def open_docks(viewer, interval_ms: int, sampler: GapSampler) -> dict:
    """Heartbeat while each dock is built and added, and for 1 s after (deferred work shows up too)."""
    import importlib

    import numpy as np
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    docks = {"predict": "napari_muvit.widgets.predict.dock:PredictWidget",
             "attention": "napari_muvit.widgets.attention.dock:AttentionProbeWidget",
             "teach": "napari_muvit.widgets.teach.dock:TeachWidget",
             "slides": "napari_muvit.widgets.slides.dock:SlideListWidget"}
    out = {}
    for name, target in docks.items():
        ticks: list[float] = []
        timer = _heartbeat(interval_ms, sampler, ticks)
        _pump(app, 0.3)
        callbacks = {k: list(getattr(viewer, k)) for k in ("mouse_move_callbacks", "mouse_drag_callbacks")}
        t0 = time.perf_counter()
        module, _, cls = target.partition(":")
        widget = getattr(importlib.import_module(module), cls)(viewer)  # what napari does on the menu click
        dock = viewer.window.add_dock_widget(widget, name=f"MuViT {name}")
        built = time.perf_counter() - t0
        _pump(app, 1.0)
        timer.stop()
        gaps = np.diff(np.asarray(ticks)) * 1000 if len(ticks) > 1 else np.array([0.0])
        out[name] = {"build_s": round(built, 3), "max_gap_ms": round(float(gaps.max()), 1),
                     "gaps_over_100ms": int((gaps > 100).sum()), **sampler.causes(ticks, gaps)}
        viewer.window.remove_dock_widget(dock)
        for key, kept in callbacks.items():  # a closed dock stops listening to the mouse
            getattr(viewer, key)[:] = kept
        widget.close()
        del widget
    return out


def engine_only(args, model: str, slide: str) -> dict:
    """Heartbeat of a bare Qt event loop while the engine predicts in a thread, then in the process."""
    import shutil

    import numpy as np
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_muvit.engine.recipe import Recipe
    from napari_muvit.widgets.engine_process import ProcessJob, engine_process
    from napari_muvit.widgets.prediction_job import PREDICT_TARGET, _predict_in_thread
    from napari_muvit.widgets.workers import EngineJob

    app = QApplication.instance() or QApplication([])
    engine_process().warm()
    side, c = int(args.region if args.region != "whole" else args.size), args.size // 2
    region = (c - side // 2, c + side // 2, c - side // 2, c + side // 2)
    out = {}
    for run, mode in enumerate(("thread", "process", "thread", "process")):  # the 1st thread run imports torch
        store = os.path.join(tempfile.mkdtemp(prefix="muvit-hb-"), "out.zarr")
        recipe = Recipe(source=slide, model=model, levels=(1, 4, 16), region=region, batch_size=args.batch,
                        device=args.device, out=store)
        job = (EngineJob(_predict_in_thread, args=(recipe,)) if mode == "thread"
               else ProcessJob(PREDICT_TARGET, args=(recipe,)))
        ticks: list[float] = []
        timer = QTimer()
        timer.timeout.connect(lambda t=ticks: t.append(time.perf_counter()))
        timer.start(10)
        job.start()
        while job.running:
            app.processEvents()
            time.sleep(0.001)
        timer.stop()
        gaps = np.diff(ticks) * 1000
        out[f"{mode}_run{run // 2 + 1}"] = {
            "seconds": round(job.stopped_at - job.started_at, 2), "max_gap_ms": round(float(gaps.max()), 1),
            "p99_gap_ms": round(float(np.percentile(gaps, 99)), 1), "gaps_over_100ms": int((gaps > 100).sum()),
            "error": job.error}
        shutil.rmtree(os.path.dirname(store), ignore_errors=True)
    return out


def teach_pretrain(viewer, work: str, cancel_after: int) -> dict:
    """Heartbeat while the teach dock opens and pre-trains (tiny settings), and how fast Cancel ends it."""
    import numpy as np
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_muvit.widgets.teach.dock import TeachWidget

    app = QApplication.instance()
    sampler = GapSampler()
    ticks: list[float] = []

    def beat():
        ticks.append(time.perf_counter())
        sampler.tick()

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(beat)
    timer.start()
    for _ in range(20):
        app.processEvents()
    t_open = time.perf_counter()
    widget = TeachWidget(viewer)
    viewer.window.add_dock_widget(widget, name="teach")
    open_s = time.perf_counter() - t_open
    tab = widget.pretrain
    tab.levels.value = "1,4"
    tab.size.setValue(32)
    tab.batch.setValue(2)
    tab.steps.setValue(100_000)
    tab.out.value = os.path.join(work, "mae")
    ticks.clear()
    t_click = time.perf_counter()
    ticks.append(t_click)  # the Start click is the first beat: time spent inside start() is a gap too
    job = tab.start()
    start_ms = (time.perf_counter() - t_click) * 1000
    t_cancel = None
    while job.running:
        app.processEvents()
        time.sleep(0.001)
        if t_cancel is None and job.done >= cancel_after:
            t_cancel = time.perf_counter()
            tab.cancel_btn.click()
    t_end = time.perf_counter()
    while time.perf_counter() < t_end + 0.5:  # the outcome handler builds the preview layers: keep beating
        app.processEvents()
        time.sleep(0.001)
    timer.stop()
    for _ in range(50):  # deliver the job's last signals (the tab's final status line)
        app.processEvents()
    gaps = np.diff(np.asarray(ticks)) * 1000 if len(ticks) > 1 else np.array([0.0])
    # split at the tab's outcome handler: Start click .. outcome (training) vs building the preview layers
    ends = np.asarray(ticks[1:]) if len(ticks) > 1 else np.array([0.0])
    outcome = getattr(tab, "finished_at", None)
    before = gaps[ends <= outcome] if outcome is not None else gaps
    spanning = gaps[(ends > outcome) & (ends - gaps / 1000 <= outcome)] if outcome is not None else gaps[:0]
    stopping = getattr(job, "stopping_at", None)  # ProcessJob: when the engine read the cancel flag
    return {
        **sampler.causes(ticks, gaps),
        "open_dock_s": round(open_s, 3), "pretrain_steps": job.done, "heartbeat_ticks": len(ticks),
        "pretrain_max_gap_ms": round(float(gaps.max()), 1),
        "start_click_ms": round(start_ms, 1),
        "until_outcome_max_gap_ms": round(float(before.max()), 1) if before.size else None,
        "until_outcome_max_gap_at_s": round(float(ends[ends <= outcome][np.argmax(before)] - t_click), 2)
        if outcome is not None and before.size else None,
        "outcome_to_layers_gap_ms": round(float(spanning.max()), 1) if spanning.size else None,
        "outcome_at_s": None if outcome is None else round(outcome - t_click, 2),
        "cancel_at_s": None if t_cancel is None else round(t_cancel - t_click, 2),
        "gaps_over_100ms_at_s": [[round(float(e - t_click), 2), round(float(g), 1)] for e, g in zip(ends, gaps) if g > 100],
        "cancel_read_s": None if stopping is None or job.cancel_at is None else round(stopping - job.cancel_at, 3),
        "pretrain_p99_gap_ms": round(float(np.percentile(gaps, 99)), 1), "gaps_over_100ms": int((gaps > 100).sum()),
        "cancel_latency_s": None if t_cancel is None else round(job.stopped_at - job.cancel_at, 3),
        "cancel_to_done_s": None if t_cancel is None else round(t_end - t_cancel, 3),
        "status": tab.status.text(), "error": job.error,
    }


def main() -> dict:
    args = _args()
    work = tempfile.mkdtemp(prefix="muvit-heartbeat-")
    os.environ.setdefault("NAPARI_MUVIT_CACHE_DIR", os.path.join(work, "cache"))
    os.environ["NAPARI_MUVIT_SETTINGS_DIR"] = os.path.join(work, "settings")
    import napari
    import numpy as np
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_muvit.widgets._reader import read_slide
    from napari_muvit.widgets._sample import sample_slide_path
    from napari_muvit.widgets.predict.dock import PredictWidget

    model = args.model
    if model == "tiny":
        import subprocess
        import sys

        model = os.path.join(work, "tiny")
        # in a child: the GUI process must not have torch imported (as in a napari session)
        code = ("import sys; from napari_muvit.engine.testing import tiny_segmenter; "
                "from napari_muvit.model import save_model; "
                "save_model(tiny_segmenter(levels=(1, 4, 16), patch=8, crop=64), sys.argv[1])")
        subprocess.run([sys.executable, "-c", code, model], check=True)
    if args.engine_only:
        out = {"benchmark": "heartbeat-engine-only", "model": args.model, "slide_px": args.size,
               "region": args.region, "batch": args.batch, "device": args.device, "cpu_count": os.cpu_count(),
               "load_avg_1min": round(os.getloadavg()[0], 2)}
        out.update(engine_only(args, model, str(sample_slide_path(size=args.size))))
        return out
    viewer = napari.Viewer(show=True)
    for data, kwargs, kind in read_slide(str(sample_slide_path(size=args.size))):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    if args.teach:
        out = {"benchmark": "heartbeat-teach", "slide_px": args.size, "cpu_count": os.cpu_count(),
               "load_avg_1min": round(os.getloadavg()[0], 2)}
        out.update(teach_pretrain(viewer, work, args.cancel_after))
        viewer.close()
        return out
    load_start = round(os.getloadavg()[0], 2)
    sampler = GapSampler(args.sample_after_ms)
    idle_gaps = idle(args.idle_s, args.interval_ms, sampler) if args.idle_s > 0 else None
    docks = None
    if not args.no_docks:  # first, as in a fresh napari session (nothing imported by a run yet)
        import sys

        docks = open_docks(viewer, args.interval_ms, sampler)
        docks["torch_imported_in_gui_process"] = "torch" in sys.modules
        if args.docks_only:
            viewer.close()
            return {"benchmark": "heartbeat-docks", "slide_px": args.size, "cpu_count": os.cpu_count(),
                    "load_avg_1min": [load_start, round(os.getloadavg()[0], 2)], "idle": idle_gaps,
                    "open_docks": docks}
    w = PredictWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.model.source.setCurrentText("demo" if model == "demo" else "folder")
    w.model.folder.setText("" if model == "demo" else model)
    w._on_model_changed()
    w.model.batch.setValue(args.batch)
    w.model.device.setCurrentText(args.device)
    w.context.setChecked(False)
    w.live.setChecked(not args.no_live)
    if args.region == "whole":
        w.region_mode.setCurrentText("whole slide")
    else:
        side, c = int(args.region), args.size // 2
        viewer.add_shapes([np.array([[c - side // 2, c - side // 2], [c + side // 2, c + side // 2]], float)],
                          shape_type="rectangle", name="region")
        w.shapes_combo.setCurrentText("region")
        w.region_mode.setCurrentText("shapes layer")
    app = QApplication.instance()

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(args.interval_ms)

    def beat():
        ticks.append(time.perf_counter())
        sampler.tick()

    timer.timeout.connect(beat)

    def run_once(cancel_after=None):
        for _ in range(20):
            app.processEvents()
        ticks.clear()
        timer.start()
        t_click = time.perf_counter()
        ticks.append(t_click)  # the Run click is the first beat: time spent inside run() is a gap too
        sampler.tick()
        job = w.run()
        if job is None:
            raise SystemExit(f"run did not start: {w.status.text()}")
        t0 = time.perf_counter()
        t_cancel = None
        while not (not job.running and w.run_button.isEnabled()):
            app.processEvents()
            time.sleep(0.001)
            if cancel_after is not None and t_cancel is None and job.done >= cancel_after:
                t_cancel = time.perf_counter()
                w.cancel()
        t_end = time.perf_counter()
        timer.stop()
        ticks_arr = np.asarray(ticks)
        gaps = np.diff(ticks_arr) * 1000 if len(ticks) > 1 else np.array([0.0])
        # engine running: from the job's start (after Run built the empty output layers) to the engine's stop
        inside = (ticks_arr[1:] > job.started_at) & (ticks_arr[:-1] < job.stopped_at)
        run_gaps = gaps[inside] if inside.any() else np.array([0.0])
        return {
            "engine_running_max_gap_ms": round(float(run_gaps.max()), 1),
            "engine_running_p99_gap_ms": round(float(np.percentile(run_gaps, 99)), 1),
            "run_click_ms": round((t0 - t_click) * 1000, 1),
            "seconds": round(t_end - t0, 2), "tiles": job.total, "tiles_done": job.done,
            "tiles_per_s": round(job.done / max(t_end - t0, 1e-9), 2),
            # whole window: click on Run (empty output layers built) ... results shown as layers
            "heartbeat_ticks": len(ticks), "click_to_layers_max_gap_ms": round(float(gaps.max()), 1),
            "click_to_layers_p99_gap_ms": round(float(np.percentile(gaps, 99)), 1),
            "gaps_over_100ms": int((gaps > 100).sum()),
            # cancel request -> engine stopped (the store is final); then outputs are read and shown
            "cancel_latency_s": None if t_cancel is None else round(job.stopped_at - job.cancel_at, 3),
            "cancel_to_layers_s": None if t_cancel is None else round(t_end - t_cancel, 3),
            "final_status": w.status.text(), "error": job.error,
            **sampler.causes(ticks_arr, gaps),
        }

    full = run_once()
    cancelled = run_once(cancel_after=args.cancel_after)
    resumed = run_once()  # same settings: continues the cancelled store
    out = {
        "benchmark": "heartbeat", "model": args.model, "slide_px": args.size, "region": args.region,
        "batch": args.batch, "device": args.device, "engine": "worker process" if w.use_process else "thread",
        "live_results": not args.no_live, "heartbeat_interval_ms": args.interval_ms,
        "load_avg_1min_start": load_start, "load_avg_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
        "full_run": full, "cancelled_run": cancelled, "resumed_run": resumed,
        "resumed_from_tiles": cancelled["tiles_done"],
        "torch_imported_in_gui_process_after_runs": "torch" in __import__("sys").modules,
    }
    if idle_gaps is not None:
        out["idle_viewer"] = idle_gaps
    if docks is not None:
        out["open_docks"] = docks
    out["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    sampler.stop()
    viewer.close()
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
