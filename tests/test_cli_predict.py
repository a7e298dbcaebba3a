"""CLI predict/info: help, exit status 2 with one line on bad input, and SIGKILL + --resume equals a full run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_muvit.cli import main
from napari_muvit.engine.testing import random_slide, tiny_segmenter


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from napari_muvit.model import save_model

    path = tmp_path_factory.mktemp("models") / "tiny"
    save_model(tiny_segmenter(), path)
    return path


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    path = tmp_path_factory.mktemp("slides") / "slide.tif"
    tifffile.imwrite(path, (random_slide((240, 240), seed=7) * 1000).astype(np.uint16))
    return path


def _cli(*argv):
    return main([str(a) for a in argv])


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        _cli("predict", "--help")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--resume" in out and "--workers" in out


def test_predict_and_info_round_trip(tmp_path, model_dir, slide, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "p.zarr"
    rc = _cli("predict", slide, "--model", model_dir, "--region", "16:208,8:200", "--overlap", "8",
              "--batch-size", "4", "--out", out)
    assert rc == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {out}") and "complete" in line
    g = zarr.open_group(str(out), mode="r")
    assert g["0"].shape == (3, 240, 240) and g["0"].dtype == np.uint8  # the whole slide, quantised by default
    assert not g["labels/prediction/0"][:16].any() and g["labels/prediction/0"][16:208, 8:200].all()
    assert _cli("info", out, "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "prediction" and info["complete"] is True
    assert info["tiles"]["done"] == 64 and info["tile_grid"] == [8, 8]
    assert _cli("info", model_dir, "--json") == 0
    minfo = json.loads(capsys.readouterr().out)
    assert minfo["task"] == "segmentation" and minfo["levels"] == [1, 4] and minfo["patch_size"] == 4


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--model", "/nonexistent/model"], "does not exist"),
        (["--levels", "1,8"], "trained on levels 1,4"),
        (["--region", "0:999,0:10"], "outside the slide"),
        (["--tile", "30"], "not divisible by the model's patch size"),
        (["--region", "nonsense"], "y0:y1,x0:x1"),
        (["--output-level", "3"], "output level 3 must be a power of two"),
        (["--prob-dtype", "int8"], "probability dtype 'int8' is not one of uint8, float16, float32, none"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, model_dir, slide, extra, words, capsys):
    argv = ["predict", slide, "--model", model_dir, "--out", tmp_path / "x.zarr", *extra]
    if "--model" in extra[:1]:
        argv = ["predict", slide, *extra, "--out", tmp_path / "x.zarr"]
    assert _cli(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-muvit: error:") and words in err and "\n" not in err


def test_existing_output_exits_2(tmp_path, model_dir, slide, capsys):
    (tmp_path / "o.zarr").mkdir()
    (tmp_path / "o.zarr" / "zarr.json").write_text("{}")
    assert _cli("predict", slide, "--model", model_dir, "--out", tmp_path / "o.zarr") == 2
    assert "already exists" in capsys.readouterr().err


def test_channel_mismatch_exits_2(tmp_path, model_dir, capsys):
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    assert _cli("predict", rgb, "--model", model_dir, "--out", tmp_path / "c.zarr") == 2
    assert "channel" in capsys.readouterr().err


SLOW_RUN = """
import sys, time, torch
torch.set_num_threads(1)
from napari_muvit.engine.predict import predict
from napari_muvit.engine.recipe import Recipe
from napari_muvit.model import load_model
model = load_model(sys.argv[1])
forward = model.forward
def slow(x, bbox=None):
    time.sleep(0.05)  # slow enough to be killed mid-run
    return forward(x, bbox)
model.forward = slow
predict(Recipe.load(sys.argv[2]), model=model)
"""


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, model_dir, slide):
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe
    from napari_muvit.model import load_model

    torch.set_num_threads(1)
    recipe = Recipe(source=str(slide), model=str(model_dir), overlap=8, batch_size=2, out=str(tmp_path / "k.zarr"),
                    extra={"output_chunk": 64})  # 4 x 4 chunks, written band by band
    recipe.save(tmp_path / "r.yaml")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(model_dir), str(tmp_path / "r.yaml")])
    state_file = tmp_path / "k.zarr" / ".muvit" / "state.npz"
    deadline = time.time() + 60
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if state_file.exists():
            try:
                with np.load(state_file) as z:
                    done = int(np.count_nonzero(z["state"] == 2))
            except (OSError, ValueError, KeyError):
                done = 0
            if done >= 20:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 20 <= done < 100
    g = zarr.open_group(str(tmp_path / "k.zarr"), mode="r")
    assert g.attrs["napari_muvit"]["complete"] is False

    model = load_model(model_dir)
    resumed = predict(recipe.replace(resume=True), model=model)
    assert resumed.complete and resumed.tiles_done == 100
    full = predict(recipe.replace(out=str(tmp_path / "full.zarr")), model=model)
    a, b = zarr.open_group(str(resumed.path), mode="r"), zarr.open_group(str(full.path), mode="r")
    np.testing.assert_array_equal(a["0"][:], b["0"][:])
    np.testing.assert_array_equal(a["labels/prediction/0"][:], b["labels/prediction/0"][:])
    assert (resumed.path / "tiles.csv").read_text() == (full.path / "tiles.csv").read_text()


def test_attention_command_writes_maps(tmp_path, model_dir, slide, capsys):
    out = tmp_path / "attn"
    assert _cli("attention", slide, "--model", model_dir, "--point", "100,60", "--layer", "rollout",
                "--out", out) == 0
    info = json.loads((out / "attention.json").read_text())
    assert info["levels"] == [1, 4] and abs(sum(info["level_share"]) - 1) < 1e-5
    assert tifffile.imread(out / "level_4.tif").shape == (8, 8)
    assert _cli("attention", slide, "--model", model_dir, "--point", "abc", "--out", out) == 2
    assert "y,x" in capsys.readouterr().err


def test_recipe_file_with_flag_overrides(tmp_path, model_dir, slide, capsys):
    from napari_muvit.engine.recipe import Recipe

    Recipe(source=str(slide), model=str(model_dir), region=(0, 96, 0, 96), overlap=8,
           out=str(tmp_path / "ignored.zarr")).save(tmp_path / "run.yaml")
    out = tmp_path / "r.zarr"
    assert _cli("predict", "--recipe", tmp_path / "run.yaml", "--out", out, "--overlap", "16",
                "--save-recipe", tmp_path / "used.json", "--quiet") == 0
    used = Recipe.load(tmp_path / "used.json")
    assert used.out == str(out) and used.overlap == 16 and used.region == (0, 96, 0, 96)
    g = zarr.open_group(str(out), mode="r")
    assert g.attrs["napari_muvit"]["recipe"]["overlap"] == 16 and g["0"].shape == (3, 240, 240)
    assert not (tmp_path / "ignored.zarr").exists()


def test_output_level_and_prob_dtype_flags(tmp_path, model_dir, slide, capsys):
    out = tmp_path / "c.zarr"
    assert _cli("predict", slide, "--model", model_dir, "--region", "16:208,8:200", "--overlap", "8",
                "--output-level", "4", "--prob-dtype", "float16", "--out", out, "--quiet") == 0
    g = zarr.open_group(str(out), mode="r")
    assert g["0"].shape == (3, 60, 60) and g["0"].dtype == np.float16
    assert g.attrs["napari_muvit"]["layout"]["level"] == 4
    assert g.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 4.0, 4.0]
    capsys.readouterr()
    assert _cli("predict", slide, "--model", model_dir, "--region", "16:208,8:200", "--overlap", "8",
                "--output-level", "2", "--out", out, "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert "level=4, not 2" in err and "\n" not in err
