"""Regenerate the user guide's teach, measurements and slides-dock screenshots from the running plugin.

    OMP_NUM_THREADS=1 xvfb-run -a python scripts/guide_screenshots.py [--out-dir docs/images] [--only NAME ...]

Each image is made in its own napari viewer (1500 x 950 window) with the demo model and synthetic slides
made by the slide generator (fixed seeds), driving the docks through their public methods and buttons:

- ``teach-scribble-probe.png``: Teach dock, a few dabs per class on a 1024 px synthetic slide (taken from
  its ground truth), the probe trained and its prediction of the whole slide, the loss curve in the tab.
- ``predict-measurements.png``: predict dock after a run of the demo model on a 512 px square of the sample
  slide; the Measurements box measured for the whole prediction and for a drawn rectangle inside it.
- ``slides-dock.png``: slides dock listing a study folder of three synthetic slides, the first two predicted
  with the demo model by *Run on selected slides*, the first opened with its prediction.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

NAMES = ("teach", "measure", "slides")
WINDOW = (1500, 950)


def _app():
    from qtpy.QtWidgets import QApplication

    return QApplication.instance()


def _wait(done, timeout: float, what: str) -> None:
    app, t0 = _app(), time.perf_counter()
    while not done():
        app.processEvents()
        time.sleep(0.01)
        if time.perf_counter() - t0 > timeout:
            raise ValueError(f"the {what} did not finish within {timeout:.0f} s; raise --timeout.")


def _settle(seconds: float = 1.0) -> None:
    app, t0 = _app(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        app.processEvents()
        time.sleep(0.02)


def _viewer(title: str):
    import napari

    viewer = napari.Viewer(title=title, show=True)
    viewer.window._qt_window.resize(*WINDOW)
    return viewer


def _dabs(truth: np.ndarray, per_class: int, half: int, seed: int = 0) -> np.ndarray:
    """Dabs as a user paints them: `per_class` squares of side `2*half+1` around random pixels of each class,
    each labelling only the pixels of that class (label = ground-truth value)."""
    rng = np.random.default_rng(seed)
    strokes = np.zeros_like(truth, dtype=np.uint8)
    for c in np.unique(truth):
        if c == 0:
            continue
        ys, xs = np.nonzero(truth == c)
        for i in rng.choice(len(ys), per_class, replace=False):
            y0, x0 = max(0, ys[i] - half), max(0, xs[i] - half)
            window = truth[y0 : ys[i] + half + 1, x0 : xs[i] + half + 1]
            strokes[y0 : ys[i] + half + 1, x0 : xs[i] + half + 1][window == c] = c
    return strokes


def teach(out: Path, tmp: Path, timeout: float) -> str:
    from napari_muvit.data.synthetic import synthetic_slide, write_synthetic_slide
    from napari_muvit.widgets._reader import read_slide
    from napari_muvit.widgets.teach.dock import TeachWidget

    size, seed = 1024, 4  # seed 4: all three cell classes occur on a 1024 px slide
    path = write_synthetic_slide(tmp / "teach-slide.ome.zarr", size=size, seed=seed)
    _, truth, names = synthetic_slide(size, seed=seed)
    viewer = _viewer("napari-muvit teach")
    try:
        data, kwargs, _ = read_slide(str(path))[0]
        viewer.add_image(data, **kwargs)
        widget = TeachWidget(viewer)
        viewer.window.add_dock_widget(widget, name="MuViT teach", area="right")
        tab = widget.scribble
        layer = tab.new_scribble_layer()
        layer.data = _dabs(truth, per_class=6, half=12)
        tab.classes.setText(", ".join(names))
        tab.region.setCurrentText("whole slide")
        job = tab.start()
        if job is None:
            raise ValueError(f"the scribble probe did not start: {tab.status.value}")
        _wait(lambda: not job.running and tab.start_btn.isEnabled(), timeout, "scribble probe")
        if job.error:
            raise ValueError(job.error)
        viewer.layers.move(viewer.layers.index(layer), len(viewer.layers))  # the dabs above the prediction
        viewer.layers.selection.active = layer
        viewer.reset_view()
        _settle(1.5)  # the plot's coalesced render
        viewer.screenshot(str(out), canvas_only=False)
        fit = tab.result
        return (f"{out}: probe trained in {fit['seconds']:.1f} s, {len(fit['losses'])} steps, "
                f"accuracy on the dabs {fit['train_accuracy']:.2f}; status: {tab.status.value}")
    finally:
        viewer.close()


def measure(out: Path, tmp: Path, timeout: float) -> str:
    from qtpy.QtWidgets import QScrollArea

    from napari_muvit.cli.demo import open_demo

    viewer, widget = open_demo("demo", show=True)
    try:
        h, w = widget.image.pyramid.shape[-2:]
        side = min(512, h, w)
        y0, x0 = min(1536, h - side), min(1408, w - side)  # on the sample slide: bright- and dark-disc cells
        scale = viewer.layers[0].scale

        def box(name, y, x, s, colour):
            layer = viewer.add_shapes([np.array([[y, x], [y, x + s], [y + s, x + s], [y + s, x]], float)],
                                      shape_type="rectangle", name=name, edge_color=colour,
                                      face_color="transparent", edge_width=3)
            layer.scale = scale
            return layer

        region = box("predicted region", y0, x0, side, "white")
        widget.shapes_combo.setCurrentText(region.name)
        widget.region_mode.setCurrentText("shapes layer")
        job = widget.run()
        if job is None:
            raise ValueError(widget.status.text() or "the prediction did not start.")
        _wait(lambda: not job.running and widget.run_button.isEnabled(), timeout, "prediction")
        if job.error:
            raise ValueError(job.error)
        for layer in viewer.layers:  # the prediction and the two rectangles, not the ROI boxes or the truth
            if layer.name in ("MuViT ROIs", "ground_truth"):
                layer.visible = False
        drawn = box("drawn rectangle", y0 + side // 4, x0 + side // 4, side // 2, "yellow")
        panel = widget.measure_panel
        panel.refresh_regions()
        panel.regions.setCurrentText(drawn.name)
        mjob = panel.measure()
        if mjob is None:
            raise ValueError(widget.status.text() or "the measurement did not start.")
        _wait(lambda: not mjob.running and panel.result is not None, timeout, "measurement")
        from qtpy.QtCore import Qt

        viewer.window._qt_window.resizeDocks([widget.dock], [640], Qt.Horizontal)  # the table's columns
        panel.table.sortItems(1, Qt.AscendingOrder)  # by class: each class's rows of both regions together
        scroll = widget.findChild(QScrollArea)
        _settle(1.5)  # the chart is drawn off the GUI thread
        scroll.ensureWidgetVisible(panel, 0, 0)
        scroll.verticalScrollBar().setValue(scroll.verticalScrollBar().maximum())
        ps = np.asarray(scale, dtype=float)[-2:]
        from napari_muvit.widgets.results import centre_camera

        centre_camera(viewer, y0 + side / 2, x0 + side / 2, side * 1.3, ps, fill=0.95)
        viewer.layers.selection.active = drawn
        _settle(1.0)
        viewer.screenshot(str(out), canvas_only=False)
        return (f"{out}: {job.total} tiles predicted, {panel.table.rowCount()} measurement rows, "
                f"chart {[(n, round(float(a))) for n, a in panel.bars]}")
    finally:
        viewer.close()


def slides(out: Path, tmp: Path, timeout: float) -> str:
    from napari_muvit.data.synthetic import write_synthetic_slide
    from napari_muvit.widgets.slides.dock import SlideListWidget

    study, preds = tmp.parent / "study", tmp.parent / "study-preds"
    study.mkdir()
    preds.mkdir()
    for i in range(3):
        write_synthetic_slide(study / f"S0{i + 1}.zarr", size=1024, seed=i)
    viewer = _viewer("napari-muvit slides")
    try:
        w = SlideListWidget(viewer)
        viewer.window.add_dock_widget(w, name="MuViT slides", area="right")
        w.source.value = str(study)
        w.outputs.value = str(preds)
        w.refresh.clicked.emit()
        if w.table.rowCount() != 3:
            raise ValueError(f"the slides dock listed {w.table.rowCount()} slides, not 3: {w.status.value}")
        sm = w.table.selectionModel()
        w.table.selectRow(0)
        sm.select(w.table.model().index(1, 0), sm.Select | sm.Rows)
        w.run_button.clicked.emit()  # model empty: the demo model
        _wait(lambda: w.batch is not None and not w.batch.running and w.run_button.isEnabled(), timeout, "batch")
        w.refresh.clicked.emit()  # listed again: the new output states, thumbnails read afresh
        _wait(lambda: not w.thumbnails.job.running
              and not any(w.table.item(r, 0).icon().isNull() for r in range(3)), timeout, "thumbnails")
        w.table.clearSelection()
        w.table.selectRow(0)
        w.table.cellClicked.emit(0, 0)
        if "ground_truth" in viewer.layers:  # the slide's prediction, not its ground truth
            viewer.layers["ground_truth"].visible = False
        viewer.reset_view()
        _settle(1.5)
        viewer.screenshot(str(out), canvas_only=False)
        states = [w.table.cell_text(r, 4) for r in range(3)]
        return f"{out}: states {states}; {w.run_status.value}; {w.status.value}"
    finally:
        viewer.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default=str(Path(__file__).resolve().parents[1] / "docs" / "images"))
    p.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES))
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed for each background job")
    args = p.parse_args(argv)
    import os

    import torch

    os.environ.setdefault("NAPARI_MUVIT_THREADS", "1")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out_dir = Path(args.out_dir)
    files = {"teach": "teach-scribble-probe.png", "measure": "predict-measurements.png", "slides": "slides-dock.png"}
    makers = {"teach": teach, "measure": measure, "slides": slides}
    with tempfile.TemporaryDirectory(prefix="mv") as tmp:  # short: the slides dock shows these paths
        for name in args.only:
            t0 = time.perf_counter()
            sub = Path(tmp) / name
            sub.mkdir()
            print(makers[name](out_dir / files[name], sub, args.timeout), f"({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
