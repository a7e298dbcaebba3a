"""`napari-muvit demo --screenshot`: opens napari, predicts, probes attention, saves the window, exits."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np


def test_demo_screenshot_runs_headless(tmp_path, qapp):  # qapp: pytest-xvfb's display is up
    out = tmp_path / "demo.png"
    env = dict(os.environ, NAPARI_MUVIT_SETTINGS_DIR=str(tmp_path / "settings"),
               NAPARI_MUVIT_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run(
        [sys.executable, "-m", "napari_muvit.cli", "demo", "--screenshot", str(out), "--region", "128",
         "--timeout", "120"], capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tiles: 9" in result.stdout and "Query at" in result.stdout  # 128 px region = 3 x 3 tiles
    from skimage.io import imread

    img = imread(out)
    assert img.shape[0] >= 600 and img.shape[1] >= 1000
    assert float(np.std(img[..., :3])) > 10  # a real window, not a blank frame


def test_demo_rejects_a_bad_screenshot_name(tmp_path):
    result = subprocess.run([sys.executable, "-m", "napari_muvit.cli", "demo", "--screenshot", str(tmp_path / "x.txt")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "must end in .png" in result.stderr
