"""`napari-muvit demo`: napari with the synthetic sample slide, the demo model chosen and the widget docked.

With ``--screenshot OUT.png`` it also predicts a region and probes the attention at its centre, saves a
screenshot of the whole window and exits (works under a virtual display, e.g. ``xvfb-run -a``).
"""

from __future__ import annotations

import argparse
import time


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo", help="open napari with the sample slide, the demo model and the MuViT widget",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--screenshot", metavar="OUT.png", default=None,
                   help="also run a prediction and an attention probe, save a window screenshot and exit")
    p.add_argument("--model", default="demo", help="'demo' (built in) or a model folder (default: demo)")
    p.add_argument("--region", type=int, default=512, metavar="PX",
                   help="side of the centred square region predicted for the screenshot (default: 512)")
    p.add_argument("--attention-screenshot", metavar="OUT.png", default=None,
                   help="with --screenshot: also save the window with the attention widget in front")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="give up on the screenshot run after this many seconds (default: 300)")
    return p


def _wait(app, done, timeout: float, what: str) -> None:
    t0 = time.perf_counter()
    while not done():
        app.processEvents()
        time.sleep(0.01)
        if time.perf_counter() - t0 > timeout:
            raise ValueError(f"the demo {what} did not finish within {timeout:.0f} s; raise --timeout.")


def open_demo(model: str = "demo", show: bool = True):
    """A viewer with the sample slide and the predict widget docked, model chosen. Returns
    ``(viewer, predict_widget)``."""
    import napari

    from napari_muvit.widgets.predict.dock import PredictWidget

    viewer = napari.Viewer(title="napari-muvit demo", show=show)
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("napari-muvit", "synthetic_slide")
    widget = PredictWidget(viewer)
    widget.dock = viewer.window.add_dock_widget(widget, name="MuViT predict", area="right")
    if model == "demo":
        widget.model.source.setCurrentText("demo")
    else:
        widget.model.folder.setText(str(model))
        widget.model.source.setCurrentText("folder")
    widget._on_model_changed()
    if widget.model.info is None:
        raise ValueError(widget.model.card.text().replace("<i>", "").replace("</i>", ""))
    return viewer, widget


def screenshot_run(viewer, widget, out: str, region: int, timeout: float, attention_out: str | None = None) -> dict:
    """Predict a centred square, probe attention at its centre, fit the view, save the screenshot."""
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from napari_muvit.widgets.attention.dock import AttentionProbeWidget
    from napari_muvit.widgets.results import centre_camera

    app = QApplication.instance()
    h, w = widget.image.pyramid.shape[-2:]
    side = min(int(region), h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    shapes = viewer.add_shapes([np.array([[y0, x0], [y0, x0 + side], [y0 + side, x0 + side], [y0 + side, x0]],
                                         float)], shape_type="rectangle", name="demo region",
                               edge_color="white", face_color="transparent", edge_width=3)
    shapes.scale = viewer.layers[0].scale
    widget.shapes_combo.setCurrentText(shapes.name)
    widget.region_mode.setCurrentText("shapes layer")
    widget.context.setChecked(True)
    job = widget.run()
    if job is None:
        raise ValueError(widget.status.text() or "the prediction did not start.")
    _wait(app, lambda: not job.running and widget.run_button.isEnabled(), timeout, "prediction")
    if job.error:
        raise ValueError(job.error)
    info = {"tiles": job.total, "prediction_s": round(job.stopped_at - job.started_at, 1)}
    centre = (y0 + side / 2, x0 + side / 2)
    widget.update_context_preview(center_yx=centre)
    probe = AttentionProbeWidget(viewer)
    viewer.window.add_dock_widget(probe, name="MuViT attention", area="right", tabify=True)
    if widget.model.model_source() != "demo":  # the probe widget starts on the demo model
        probe._model.value = widget.model.model_source()
    probe.probe(centre)
    _wait(app, lambda: (probe.last_view is not None and not probe.steps.pending)
          or "failed" in str(probe._status.value).lower(), timeout, "attention probe")
    info["attention"] = str(probe._status.value)
    widget._hide_context()  # the probe draws its own crops
    ps = np.asarray(viewer.layers[0].scale, dtype=float)[-2:]
    centre_camera(viewer, *centre, side * 2.8, ps, fill=0.95)  # the region plus 0.9 of its side each way
    _settle(app)
    if attention_out:
        viewer.screenshot(attention_out, canvas_only=False)
        info["attention_screenshot"] = attention_out
    widget.dock.raise_()
    for layer in viewer.layers:  # the prediction screenshot shows predictions, not the probe
        if layer.name.startswith("attention"):
            layer.visible = False
    _settle(app)
    viewer.screenshot(out, canvas_only=False)
    info["screenshot"] = out
    return info


def _settle(app, n: int = 30) -> None:
    for _ in range(n):
        app.processEvents()
        time.sleep(0.02)


def run(args) -> int:
    try:
        import napari  # noqa: F401
    except ImportError as exc:  # pragma: no cover - napari is a dependency
        raise ValueError(f"napari is not installed ({exc}); install napari-muvit[all].") from None
    from pathlib import Path

    if args.screenshot and Path(args.screenshot).suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"screenshot {args.screenshot!r} must end in .png or .jpg.")
    viewer, widget = open_demo(args.model, show=True)
    if not args.screenshot:
        import napari

        napari.run()
        return 0
    try:
        info = screenshot_run(viewer, widget, args.screenshot, args.region, args.timeout, args.attention_screenshot)
    finally:
        viewer.close()
    print(" · ".join(f"{k}: {v}" for k, v in info.items()))
    return 0
