"""Latency of one attention-probe click in napari with the demo model on CPU.

Opens a viewer with a synthetic slide and the attention probe widget, then probes: the very first click
(model load + encoder pass), the first click in each new tile (encoder pass), and clicks inside an
already probed tile (cache hit). A click's latency (`*_click_ms`) runs from the widget's `probe(point)` call to the
attention layers, marker, outlines and share plot request being updated on the GUI thread;
`*_on_screen_ms` runs until the canvas has finished painting them. Also the engine alone (`attention_probe` on a session) for the
same cached clicks. Prints one JSON object. Needs a display (`xvfb-run -a python benchmarks/attention_click.py`).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _wait(app, widget, timeout=120.0):
    t0 = time.perf_counter()
    while widget._job is None or widget._job.running or widget._pending is not None:
        app.processEvents()
        time.sleep(0.001)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("probe did not finish")
    app.processEvents()


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="synthetic slide side (px)")
    parser.add_argument("--clicks", type=int, default=20, help="clicks inside an already probed tile")
    parser.add_argument("--tiles", type=int, default=5, help="clicks that each open a new tile")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()

    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    from napari_muvit.data.synthetic import write_synthetic_slide
    from napari_muvit.engine.attention import attention_probe, open_session
    from napari_muvit.widgets._reader import read_slide
    from napari_muvit.widgets.attention import AttentionProbeWidget

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="muvit-bench-"))
    slide = tmp / "slide.ome.zarr"
    write_synthetic_slide(slide, size=args.size, seed=0)
    viewer = napari.Viewer(show=True)
    data, kwargs, _ = read_slide(str(slide))[0]
    viewer.add_image(data, **kwargs)
    widget = AttentionProbeWidget(viewer)
    viewer.window.add_dock_widget(widget, name="MuViT attention probe")
    app = QApplication.instance()
    rng = np.random.default_rng(0)
    parts, on_screen = [], []

    draws = []
    viewer.window._qt_viewer.canvas._scene_canvas.events.draw.connect(lambda _e: draws.append(time.perf_counter()))

    def click(point):
        t0 = time.perf_counter()
        widget.probe(point)
        _wait(app, widget)
        t_layers = t0 + widget.last_latency_s
        while not draws or draws[-1] < t_layers:  # until the canvas has painted the new maps
            app.processEvents()
            time.sleep(0.001)
        on_screen.append(draws[-1] - t0)
        parts.append({k: widget.last_info[k] for k in ("compute_s", "delivery_s", "gui_s")})
        return widget.last_latency_s, widget.last_info["compute_s"]

    first, _ = click((300.0, 300.0))
    tile = widget.session.tile
    new_tile, new_tile_engine = [], []
    for k in range(args.tiles):
        total, engine = click((float(tile * (k + 1) + tile / 2), float(tile * (k + 2) + tile / 3)))
        new_tile.append(total)
        new_tile_engine.append(engine)
    origin = np.array([tile * 6, tile * 7], dtype=float)
    click(tuple(origin + 1))  # this tile's encoder pass
    points = [tuple(origin + rng.uniform(0, tile - 1, 2)) for _ in range(args.clicks)]
    same_tile, same_tile_worker = [], []
    for point in points:
        total, engine = click(point)
        same_tile.append(total)
        same_tile_worker.append(engine)
    assert tuple(widget.last_result.tile["origin_yx"]) == tuple(int(v) for v in origin)  # all in one tile

    session = open_session(str(slide), "demo")
    attention_probe(session, tuple(origin + 1))
    engine_only = []
    for point in points:
        t0 = time.perf_counter()
        attention_probe(session, point)
        engine_only.append(time.perf_counter() - t0)
    viewer.close()

    def ms(values):
        return {"median": round(1000 * statistics.median(values), 1), "max": round(1000 * max(values), 1)}

    return {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, CPU",
        "model": "demo", "slide_px": args.size, "tile_px": tile, "levels": list(widget.session.levels),
        "first_click_ms": round(1000 * first, 1),
        "new_tile_click_ms": ms(new_tile), "new_tile_worker_ms": ms(new_tile_engine),
        "same_tile_click_ms": ms(same_tile),
        "same_tile_on_screen_ms": ms(on_screen[-args.clicks:]), "same_tile_worker_ms": ms(same_tile_worker),
        "same_tile_engine_only_ms": ms(engine_only),
        "same_tile_delivery_ms": ms([p["delivery_s"] for p in parts[-args.clicks:]]),
        "same_tile_gui_update_ms": ms([p["gui_s"] for p in parts[-args.clicks:]]),
        "same_tile_clicks_under_300ms": sum(t < 0.3 for t in same_tile), "same_tile_clicks": len(same_tile),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
