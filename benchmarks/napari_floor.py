"""What napari alone costs the GUI thread here: heartbeat gaps of a bare viewer, with no plugin loaded.

The same 20 ms QTimer heartbeat as `benchmarks/heartbeat.py`, on a viewer that only napari touches: each
action below runs ``--repeats`` times, and its largest heartbeat gap (from the action to 1 s after it, so
the first draw counts) is reported. This is the floor under every gap the plugin's docks can reach on the
machine: a result needs at least one new layer, and a dock is added with ``add_dock_widget``.

Actions: ``idle`` (nothing), ``image_64`` / ``labels_64`` (a 64 x 64 layer), ``image_2048`` (2048^2 float32),
``points`` (20 points), ``vectors`` (20 vectors), ``labels_repaint`` (one
pixel of an existing 2048^2 labels layer changed and refreshed: what a live result update asks of napari),
``dock_empty`` (an empty QWidget docked), ``dock_200_rows`` (a dock of 200 label + spin box rows, about the
predict dock's control count), ``shapes`` (one rectangle; last, and its layers stay).

Run under a display:
    xvfb-run -a python benchmarks/napari_floor.py [--repeats 3]
The last stdout line is one JSON object: per action ``max_gap_ms`` (the largest over the repeats) and
``gaps_ms`` (each repeat's largest), plus the OpenGL renderer.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


class _NoSampler:
    """The heartbeat's sampler slot, left empty: only the gaps are wanted here."""

    def tick(self) -> None:
        pass


def _dock(rows: int):
    from qtpy.QtWidgets import QFormLayout, QLabel, QSpinBox, QWidget

    w = QWidget()
    form = QFormLayout(w)
    for i in range(rows):
        form.addRow(QLabel(f"setting {i}"), QSpinBox())
    return w


def actions(viewer):
    """name -> a callable doing it once (each returns what must be undone, or None)."""
    rng = np.random.default_rng(0)
    big = viewer.add_labels(np.zeros((2048, 2048), np.uint8), name="live labels", visible=True)

    def repaint():
        big.data[rng.integers(0, 2048), rng.integers(0, 2048)] = int(rng.integers(1, 4))
        big.refresh()

    return {
        "idle": lambda: None,
        "image_64": lambda: viewer.add_image(rng.random((64, 64), np.float32)),
        "labels_64": lambda: viewer.add_labels(rng.integers(0, 3, (64, 64), dtype=np.uint8)),
        "image_2048": lambda: viewer.add_image(rng.random((2048, 2048), np.float32)),
        "points": lambda: viewer.add_points(rng.random((20, 2)) * 64),
        "vectors": lambda: viewer.add_vectors(rng.random((20, 2, 2)) * 64),
        "labels_repaint": repaint,
        "dock_empty": lambda: viewer.window.add_dock_widget(_dock(0), name="empty"),
        "dock_200_rows": lambda: viewer.window.add_dock_widget(_dock(200), name="rows"),
        # last, and kept: drawing on after a Shapes layer was removed crashed this napari/vispy/llvmpipe stack
        "shapes": lambda: viewer.add_shapes([np.array([[0, 0], [0, 10], [10, 10], [10, 0]], float)]) and None,
    }


def undo(viewer, made) -> None:
    if made is None:
        return
    if made in viewer.layers:
        viewer.layers.remove(made)
    else:  # a dock widget
        viewer.window.remove_dock_widget(made)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--interval-ms", type=int, default=20)
    args = p.parse_args(argv)

    import napari
    from heartbeat import _heartbeat, _pump
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    _pump(app, 2.0)
    sampler = _NoSampler()
    todo = actions(viewer)
    _pump(app, 1.0)
    out: dict = {}
    for name, act in todo.items():
        gaps_ms = []
        for _ in range(args.repeats):
            ticks: list[float] = []
            timer = _heartbeat(args.interval_ms, sampler, ticks)
            _pump(app, 0.3)
            start = len(ticks)
            made = act()
            _pump(app, 1.0)
            timer.stop()
            seen = np.asarray(ticks[max(start - 1, 0):])
            gaps_ms.append(round(float(np.diff(seen).max() * 1000), 1) if len(seen) > 1 else float("nan"))
            undo(viewer, made)
            _pump(app, 0.3)
        out[name] = {"max_gap_ms": max(gaps_ms), "gaps_ms": gaps_ms}
    from vispy import gloo

    renderer = gloo.gl.glGetParameter(gloo.gl.GL_RENDERER)
    viewer.close()
    result = {"actions": out, "gl_renderer": renderer, "napari": napari.__version__,
              "machine": f"{platform.machine()}, {platform.python_version()}"}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
