"""Catalogue of bad inputs and faults: each exits 2 with one line naming the problem, and nothing on disk
changes except what the command owns (the file tree with sizes, mtimes and contents is compared)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_muvit.cli import main
from napari_muvit.engine.testing import random_slide, tiny_segmenter

REGION = "0:64,0:64"


def snapshot(root: Path) -> dict:
    """Every entry under ``root``: kind, size, mtime (ns) and a content hash for files and links."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if p.is_symlink():
                out[str(p.relative_to(root))] = ("link", os.readlink(p))
            elif p.is_dir():
                out[str(p.relative_to(root))] = ("dir", st.st_mtime_ns)
            else:
                out[str(p.relative_to(root))] = ("file", st.st_size, st.st_mtime_ns,
                                                 hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def run_cli(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.err


def assert_refused(rc, err, words):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-muvit: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder with a slide (OME-Zarr), a model, a finished store and assorted user files."""
    import shutil

    from napari_muvit.data.synthetic import write_synthetic_slide
    from napari_muvit.model import save_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("world")
    (root / "data").mkdir()
    write_synthetic_slide(root / "data" / "slide.zarr", 512, seed=1, chunk=256)
    save_model(tiny_segmenter(), root / "model")
    rc = main(["predict", str(root / "data" / "slide.zarr"), "--model", str(root / "model"), "--region", REGION,
               "--out", str(root / "done.zarr"), "--quiet"])
    assert rc == 0
    (root / "link.zarr").symlink_to(root / "data" / "slide.zarr")
    (root / "notes.txt").write_text("my notes\n")
    (root / "results").mkdir()
    (root / "results" / "table.csv").write_text("a,b\n1,2\n")
    (root / "run.yaml").write_text("source: x\n")
    (root / "old.csv").write_text("rank,score\n1,0.5\n")
    np.save(root / "pickled.npy", np.array([{"a": 1}] * 4, dtype=object).reshape(2, 2), allow_pickle=True)
    np.save(root / "labels.npy", np.zeros((8, 8), np.uint8))
    shutil.copytree(root / "data" / "slide.zarr", root / "other-slide.zarr")
    for name in ("truncated-meta.zarr", "missing-level.zarr", "truncated-level.zarr"):
        shutil.copytree(root / "data" / "slide.zarr", root / name)
    text = (root / "truncated-meta.zarr" / "zarr.json").read_text()
    (root / "truncated-meta.zarr" / "zarr.json").write_text(text[:100])
    shutil.rmtree(root / "missing-level.zarr" / "s2")
    text = (root / "truncated-level.zarr" / "s1" / "zarr.json").read_text()
    (root / "truncated-level.zarr" / "s1" / "zarr.json").write_text(text[:50])
    (root / "elsewhere.zarr").mkdir()
    (root / "elsewhere.zarr" / "zarr.json").write_text("{}")
    (root / "other-link.zarr").symlink_to(root / "elsewhere.zarr")
    _bad_model(root, "huge", "config.yaml", "dim: 32", "dim: 1000000000")
    _bad_model(root, "bad-card", "muvit.yaml", "crop_size: 32", "crop_size: big")
    _bad_model(root, "pickled", None, None, None)
    return root


def _bad_model(root, name, file, old, new):
    import shutil

    shutil.copytree(root / "model", root / name)
    if file is None:  # a pickle payload in the weights
        torch.save({"x": _Payload()}, root / name / "model.pth")
        return
    text = (root / name / file).read_text()
    assert old in text
    (root / name / file).write_text(text.replace(old, new))


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo payload-ran",))


@dataclass
class Case:
    argv: list
    words: list = field(default_factory=list)


def _predict(*extra, out="{root}/new.zarr"):
    return ["predict", "{root}/data/slide.zarr", "--model", "{root}/model", "--region", REGION, "--quiet",
            "--out", out, *extra]


CASES = {
    # outputs that would destroy an input
    "out is the slide": Case(_predict("--overwrite", out="{root}/data/slide.zarr"), ["is the input", "slide.zarr"]),
    "out is the slide, no flag": Case(_predict(out="{root}/data/slide.zarr"), ["is the input"]),
    "out inside the slide": Case(_predict(out="{root}/data/slide.zarr/pred.zarr"), ["lies inside the input"]),
    "out contains the slide": Case(_predict("--overwrite", out="{root}/data"), ["contains the input"]),
    "out is a link to the slide": Case(_predict("--overwrite", out="{root}/link.zarr"), ["is the input"]),
    "out is the model": Case(_predict("--overwrite", out="{root}/model"), ["is the input", "model"]),
    "out is the mask": Case(_predict("--mask", "{root}/labels.npy", "--overwrite", out="{root}/labels.npy"),
                            ["is the input", "labels.npy"]),
    "recipe into the slide": Case(_predict("--save-recipe", "{root}/data/slide.zarr/zarr.json"),
                                  ["recipe file", "lies inside the input"]),
    "recipe over an existing file": Case(_predict("--save-recipe", "{root}/notes.txt"),
                                         ["recipe file", "notes.txt", "already exists", "--overwrite"]),
    "recipe over the store": Case(_predict("--save-recipe", "{root}/new.zarr"), ["recipe file", "is the input"]),
    # outputs that are not ours to replace
    "overwrite a regular file": Case(_predict("--overwrite", out="{root}/notes.txt"), ["is a file, not a zarr store"]),
    "overwrite a plain folder": Case(_predict("--overwrite", out="{root}/results"), ["not a zarr store", "refusing"]),
    "existing store, no flag": Case(_predict(out="{root}/done.zarr"), ["already exists", "--resume", "--overwrite"]),
    "resume a plain folder": Case(_predict("--resume", out="{root}/results"), ["not a napari-muvit prediction store"]),
    "missing output folder": Case(_predict(out="{root}/nowhere/p.zarr"), ["nowhere", "does not exist"]),
    # inputs that are refused
    "pickled npy mask": Case(_predict("--mask", "{root}/pickled.npy"), ["pickled.npy", "pickled Python objects"]),
    "missing npy mask": Case(_predict("--mask", "{root}/absent.npy"), ["absent.npy", "does not exist"]),
    "unreachable scheduler": Case(_predict("--scheduler", "tcp://127.0.0.1:1"),
                                  ["cannot reach the dask scheduler", "127.0.0.1:1"]),
    "scheduler without a port": Case(_predict("--scheduler", "tcp://head-node"), ["needs a host and a port"]),
    "overwrite another slide": Case(_predict("--overwrite", out="{root}/other-slide.zarr"),
                                    ["zarr store that napari-muvit did not write", "choose another name"]),
    "overwrite through a link": Case(_predict("--overwrite", out="{root}/other-link.zarr"), ["symbolic link"]),
    # model folders refused before anything is built or written
    "absurd model, predict": Case(_predict(out="{root}/new.zarr")[:3] + ["{root}/huge"] + _predict()[4:],
                                  ["dim=1000000000", "from 1 to 4096"]),
    "absurd model, info": Case(["info", "{root}/huge"], ["dim=1000000000"]),
    "bad card, predict": Case(_predict()[:3] + ["{root}/bad-card"] + _predict()[4:], ["'crop_size' is 'big'"]),
    "pickled weights, predict": Case(_predict()[:3] + ["{root}/pickled"] + _predict()[4:],
                                     ["Python object", "system", "refused without running it"]),
    "attention into the slide": Case(["attention", "{root}/data/slide.zarr", "--model", "{root}/model", "--point",
                                      "32,32", "--out", "{root}/data/slide.zarr/attn"],
                                     ["output folder", "lies inside the input"]),
    "attention over a file": Case(["attention", "{root}/data/slide.zarr", "--model", "{root}/model", "--point",
                                   "32,32", "--out", "{root}/notes.txt"], ["notes.txt", "is a file"]),
    # damaged slides: the file is named
    "truncated slide metadata": Case(["predict", "{root}/truncated-meta.zarr"] + _predict()[2:],
                                     ["truncated-meta.zarr/zarr.json", "not valid JSON"]),
    "missing level array": Case(["predict", "{root}/missing-level.zarr"] + _predict()[2:], ["'s2'", "not a readable"]),
    "truncated level metadata": Case(["predict", "{root}/truncated-level.zarr"] + _predict()[2:],
                                     ["'s1'", "not valid JSON"]),
    # training outputs
    "pretrain into the slide": Case(["pretrain", "{root}/data/slide.zarr", "--out", "{root}/data/slide.zarr/m",
                                     "--steps", "1"], ["output model folder", "lies inside the input"]),
    "pretrain over a file": Case(["pretrain", "{root}/data/slide.zarr", "--out", "{root}/notes.txt", "--steps", "1",
                                  "--overwrite"], ["notes.txt", "is a file"]),
    "finetune over the base": Case(["finetune", "{root}/data/slide.zarr", "--labels", "{root}/labels.npy", "--base",
                                    "{root}/model", "--out", "{root}/model", "--overwrite"],
                                   ["output model folder", "is the input"]),
    "finetune over the labels": Case(["finetune", "{root}/data/slide.zarr", "--labels", "{root}/labels.npy",
                                      "--base", "{root}/model", "--out", "{root}/labels.npy"], ["is the input"]),
    # ROI exports
    "rois export over a file": Case(["rois", "{root}/done.zarr", "--export", "{root}/old.csv"],
                                    ["export file", "old.csv", "already exists", "--overwrite"]),
    "rois export into the store": Case(["rois", "{root}/done.zarr", "--export", "{root}/done.zarr/rois.csv"],
                                       ["export file", "lies inside the input"]),
    "rois export twice to one file": Case(["rois", "{root}/done.zarr", "--export", "{root}/a.csv", "--export",
                                           "{root}/./a.csv"], ["same file twice"]),
    "finetune pickled labels": Case(["finetune", "{root}/data/slide.zarr", "--labels", "{root}/pickled.npy",
                                     "--base", "{root}/model", "--out", "{root}/m2"], ["pickled.npy", "pickled"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_refused_and_nothing_changed(world, name, capsys):
    case = CASES[name]
    argv = [a.format(root=world) for a in case.argv]
    before = snapshot(world)
    rc, err = run_cli(capsys, *argv)
    assert_refused(rc, err, case.words)
    assert snapshot(world) == before


# ---- cases that need their own files ----------------------------------------------------------------------
@pytest.fixture
def tif_world(tmp_path, world):
    """A small TIFF slide, a model and an unfinished (cancelled) store of it."""
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe

    torch.set_num_threads(1)
    slide = tmp_path / "slide.tif"
    tifffile.imwrite(slide, (random_slide((160, 160), seed=3) * 1000).astype(np.uint16))
    out = tmp_path / "run.zarr"
    calls = []
    recipe = Recipe(source=str(slide), model=str(world / "model"), region=(0, 128, 0, 128), batch_size=4,
                    overlap=8, out=str(out))
    res = predict(recipe, cancel=lambda: calls.append(1) or len(calls) > 2)
    assert res.cancelled and not res.complete and res.tiles_total == 36
    return tmp_path, slide, out


def _resume_argv(slide, out, world):
    return ["predict", slide, "--model", world / "model", "--region", "0:128,0:128", "--batch-size", "4",
            "--overlap", "8", "--out", out, "--resume", "--quiet"]


def test_resume_on_a_replaced_slide_is_refused(tif_world, world, capsys):
    root, slide, out = tif_world
    tifffile.imwrite(slide, (random_slide((160, 160), seed=4) * 1000).astype(np.uint16))  # same shape, new pixels
    before = snapshot(root)
    rc, err = run_cli(capsys, *_resume_argv(slide, out, world))
    assert_refused(rc, err, ["started on a different slide", "pixel content"])
    assert snapshot(root) == before
    # a slide of another shape names the level shapes
    tifffile.imwrite(slide, (random_slide((192, 160), seed=3) * 1000).astype(np.uint16))
    rc, err = run_cli(capsys, *_resume_argv(slide, out, world))
    assert_refused(rc, err, ["different slide", "level shapes"])


def test_resume_on_the_same_slide_finishes(tif_world, world, capsys):
    root, slide, out = tif_world
    meta = zarr.open_group(str(out), mode="r").attrs["napari_muvit"]
    fp = meta["source_fingerprint"]
    assert fp["level_shapes"][0] == [1, 160, 160] and fp["dtype"] == "uint16" and fp["channels"] == 1
    assert len(fp["sample_sha256"]) == 32
    rc, _ = run_cli(capsys, *_resume_argv(slide, out, world))
    assert rc == 0
    assert zarr.open_group(str(out), mode="r").attrs["napari_muvit"]["complete"] is True
    assert not (out / ".muvit" / "lock").exists()


@pytest.mark.parametrize("damage, words", [
    ("state", ["run state", "state.npz", "damaged", "--overwrite"]),
    ("scratch", ["scratch prediction", ".npy", "delete it"]),
    ("metadata", ["store metadata", "zarr.json", "damaged"]),
])
def test_damaged_store_is_refused_on_resume(tif_world, world, capsys, damage, words):
    root, slide, out = tif_world
    if damage == "state":
        (out / ".muvit" / "state.npz").write_bytes(b"garbage")
    elif damage == "scratch":
        (out / ".muvit" / "scratch").mkdir(exist_ok=True)
        np.save(out / ".muvit" / "scratch" / "0_0.npy", np.zeros((3, 32, 32), np.float32))
        path = out / ".muvit" / "scratch" / "0_0.npy"
        path.write_bytes(path.read_bytes()[:1000])  # a scratch prediction cut short
    else:
        text = (out / "zarr.json").read_text()
        (out / "zarr.json").write_text(text[: len(text) // 2])
    before = snapshot(root)
    rc, err = run_cli(capsys, *_resume_argv(slide, out, world))
    assert_refused(rc, err, words)
    assert snapshot(root) == before


def test_second_writer_is_locked_out(tif_world, world, capsys):
    root, slide, out = tif_world
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (out / ".muvit" / "lock").write_text(f"{holder.pid} {socket.gethostname()}\n")
        before = snapshot(root)
        rc, err = run_cli(capsys, *_resume_argv(slide, out, world))
        assert_refused(rc, err, ["being written by another run", f"process {holder.pid}"])
        assert snapshot(root) == before
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale and the run takes over and finishes
    rc, _ = run_cli(capsys, *_resume_argv(slide, out, world))
    assert rc == 0
    assert not (out / ".muvit" / "lock").exists()


def test_overwrite_keeps_the_old_store_until_the_new_one_exists(world, tmp_path, capsys, monkeypatch):
    """A failure while the new store is being created puts the old store back, byte for byte."""
    import shutil

    from napari_muvit.engine import store as store_mod

    out = tmp_path / "p.zarr"
    shutil.copytree(world / "done.zarr", out)
    before = snapshot(tmp_path)

    def broken_create(cls, path, **kw):
        Path(path).mkdir()
        (Path(path) / "zarr.json").write_text("{")  # half a store
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(store_mod.OutputStore, "create", classmethod(broken_create))
    rc, err = run_cli(capsys, "predict", world / "data" / "slide.zarr", "--model", world / "model", "--region", REGION,
                      "--out", out, "--overwrite", "--quiet")
    assert_refused(rc, err, ["disk is full", "--resume"])
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_a_store(world, tmp_path, capsys):
    import shutil

    out = tmp_path / "p.zarr"
    shutil.copytree(world / "done.zarr", out)
    (out / "marker.txt").write_text("old store")
    rc = main(["predict", str(world / "data" / "slide.zarr"), "--model", str(world / "model"), "--region", "0:32,0:32",
               "--out", str(out), "--overwrite", "--quiet"])
    assert rc == 0
    assert not (out / "marker.txt").exists()
    meta = zarr.open_group(str(out), mode="r").attrs["napari_muvit"]
    assert meta["complete"] is True and meta["recipe"]["region"] == [0, 32, 0, 32]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr"]  # no aside copy left behind


def test_save_recipe_written_after_the_run(world, tmp_path, capsys):
    recipe = tmp_path / "run.yaml"
    rc = main(["predict", str(world / "data" / "slide.zarr"), "--model", str(world / "model"), "--region", "0:32,0:32",
               "--out", str(tmp_path / "p.zarr"), "--save-recipe", str(recipe), "--quiet"])
    assert rc == 0
    from napari_muvit.engine.recipe import Recipe

    assert Recipe.load(recipe).region == (0, 32, 0, 32)
    # a refused run (bad levels) writes no recipe
    rc, err = run_cli(capsys, "predict", world / "data" / "slide.zarr", "--model", world / "model", "--levels", "1,8",
                      "--out", tmp_path / "q.zarr", "--save-recipe", tmp_path / "q.yaml")
    assert rc == 2 and not (tmp_path / "q.yaml").exists() and not (tmp_path / "q.zarr").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr", "run.yaml"]


def test_os_errors_are_one_sentence(world, tmp_path, capsys, monkeypatch):
    import errno

    from napari_muvit.engine import predict as predict_mod

    for code, words in [(errno.ENOSPC, ["disk is full", "--resume"]), (errno.EFBIG, ["file-size limit"]),
                        (errno.EACCES, ["permission denied", "x.zarr"])]:
        def fail(recipe, progress=None, code=code):
            raise OSError(code, os.strerror(code), str(tmp_path / "x.zarr"))

        monkeypatch.setattr(predict_mod, "predict", fail)
        rc, err = run_cli(capsys, "predict", world / "data" / "slide.zarr", "--model", world / "model",
                          "--out", tmp_path / "x.zarr")
        assert_refused(rc, err, words)


def test_terminal_and_csv_text_are_defused():
    from napari_muvit.engine.safety import csv_cell, terminal_text

    assert terminal_text("tumour\x1b[2J\x1b]0;pwned\x07 \u202eevil") == "tumour?[2J?]0;pwned? ?evil"
    assert terminal_text("a\tb") == "a\tb"
    assert [csv_cell(v) for v in ["=1+2", "+x", "-y", "@SUM(A1)", "-3.5", "tumour", 5]] == [
        "'=1+2", "'+x", "'-y", "'@SUM(A1)", "-3.5", "tumour", 5]


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_file_size_limit_is_one_sentence_and_the_store_resumes(world, tmp_path):
    """A real EFBIG (file-size limit) mid-run: one line, exit 2; what was written resumes to completion."""
    import resource
    import signal

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))

    out = tmp_path / "p.zarr"
    argv = [sys.executable, "-m", "napari_muvit.cli", "predict", str(world / "data" / "slide.zarr"), "--model",
            str(world / "model"), "--out", str(out), "--batch-size", "4", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(argv, preexec_fn=limit, capture_output=True, text=True, env=env)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().count("\n") == 0 and "file-size limit" in p.stderr, p.stderr
    again = subprocess.run(argv + (["--resume"] if out.exists() else []), capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert zarr.open_group(str(out), mode="r").attrs["napari_muvit"]["complete"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr"]


def test_rois_export_overwrite_flag_and_csv_cells(world, tmp_path, capsys):
    import csv

    target = tmp_path / "rois.csv"
    target.write_text("old\n")
    rc = main(["rois", str(world / "done.zarr"), "--top-k", "3", "--export", str(target), "--overwrite"])
    assert rc == 0
    rows = list(csv.DictReader(target.open()))
    assert 1 <= len(rows) <= 3 and [r["rank"] for r in rows] == [str(i + 1) for i in range(len(rows))]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rois.csv"]  # no temporary file left

    from napari_muvit.engine.export import export_csv
    from napari_muvit.engine.rois import Roi

    rois = [Roi(1, 0.9, (5.0, 6.0), (0, 10, 0, 10), "=HYPERLINK(\"http://x\")"), Roi(2, 0.5, (1.0, 2.0), (0, 4, 0, 4), "@SUM(A1)"),
            Roi(3, 0.1, (1.0, 2.0), (0, 4, 0, 4), "tumour")]
    export_csv(rois, tmp_path / "cells.csv")
    got = [r["classification"] for r in csv.DictReader((tmp_path / "cells.csv").open())]
    assert got == ["'=HYPERLINK(\"http://x\")", "'@SUM(A1)", "tumour"]


def test_napari_writers_refuse_the_source_and_leave_no_partial_store(tmp_path, monkeypatch):
    from napari_muvit.widgets import _writer

    slide = tmp_path / "slide.zarr"
    slide.mkdir()
    meta = {"name": "rois", "metadata": {"muvit": {"source": str(slide / "labels" / "gt")}}}
    with pytest.raises(ValueError, match="lies inside the input"):
        _writer.write_geojson(str(slide / "rois.geojson"), np.zeros((1, 2)), meta)
    with pytest.raises(ValueError, match="lies inside the input"):
        _writer.write_labels_zarr(str(slide / "labels" / "gt" / "x.zarr"), np.zeros((8, 8), np.uint8), meta)
    assert sorted(p.name for p in slide.iterdir()) == []

    def broken(path, *a, **k):
        Path(path).mkdir()
        (Path(path) / "zarr.json").write_text("{")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_writer, "_write_label_levels", broken)
    with pytest.raises(OSError):
        _writer.write_labels_zarr(str(tmp_path / "labels.zarr"), np.zeros((8, 8), np.uint8), {"name": "l"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slide.zarr"]  # neither the store nor its sibling
    monkeypatch.undo()
    out = _writer.write_labels_zarr(str(tmp_path / "labels.zarr"), np.arange(64, dtype=np.uint8).reshape(8, 8),
                                    {"name": "l"})
    assert out == [str(tmp_path / "labels.zarr")]
    assert np.array_equal(zarr.open_group(out[0], mode="r")["0"][:], np.arange(64).reshape(8, 8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr", "slide.zarr"]


def test_widget_shows_a_bad_card_as_one_sentence(make_napari_viewer, world, monkeypatch):
    from napari_muvit.widgets.predict import dock as predict_module
    from napari_muvit.widgets.predict.dock import PredictWidget

    shown = []
    monkeypatch.setattr(predict_module, "notify_error", shown.append)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name="img")
    w = PredictWidget(viewer)
    w.model.source.setCurrentText("folder")
    w.model.folder.setText(str(world / "bad-card"))
    w._on_model_changed()  # no exception escapes the widget
    assert "'crop_size' is 'big'" in w.model.card.text()
    assert w.run() is None
    assert len(shown) == 1 and "'crop_size' is 'big'" in shown[0] and "muvit.yaml" in shown[0]


def test_cluster_is_reached_before_the_store_is_created(world, tmp_path):
    """Engine level (widgets, API): a scheduler that accepts no connection leaves no output behind."""
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe

    recipe = Recipe(source=str(world / "data" / "slide.zarr"), model=str(world / "model"), region=(0, 64, 0, 64),
                    out=str(tmp_path / "p.zarr"), scheduler="tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="cannot reach the dask scheduler 'tcp://127.0.0.1:1'"):
        predict(recipe)
    assert list(tmp_path.iterdir()) == []


def test_command_output_reaches_the_terminal_without_escapes(world, capsys, monkeypatch):
    from napari_muvit.cli import rois

    monkeypatch.setattr(rois, "run", lambda args: print("class \x1b]0;title\x07 \x1b[2J\tok") or 0)
    assert main(["rois", str(world / "done.zarr")]) == 0
    assert capsys.readouterr().out == "class ?]0;title? ?[2J\tok\n"
    import sys as _sys

    assert not type(_sys.stdout).__name__ == "_PlainText"  # restored after the command


def test_a_failed_run_frees_its_store(world, tmp_path, monkeypatch):
    """An exception mid-run leaves a resumable store without a lock, and the resume finishes it."""
    from napari_muvit.engine import predict as predict_mod
    from napari_muvit.engine.recipe import Recipe

    def boom(*args, **kwargs):
        raise RuntimeError("worker crashed")

    recipe = Recipe(source=str(world / "data" / "slide.zarr"), model=str(world / "model"), region=(0, 64, 0, 64),
                    out=str(tmp_path / "p.zarr"))
    with monkeypatch.context() as m:
        m.setattr(predict_mod, "_run_local", boom)
        with pytest.raises(RuntimeError):
            predict_mod.predict(recipe)
    assert (tmp_path / "p.zarr" / ".muvit").is_dir() and not (tmp_path / "p.zarr" / ".muvit" / "lock").exists()
    res = predict_mod.predict(recipe.replace(resume=True))
    assert res.complete and res.tiles_done == res.tiles_total == 9


def test_unwritable_output_folder(tmp_path, monkeypatch):
    """Root ignores permissions, so the check is exercised with os.access reporting a read-only folder."""
    from napari_muvit.engine import safety

    monkeypatch.setattr(safety.os, "access", lambda path, mode: False)
    with pytest.raises(ValueError, match="is not writable, so output .*p.zarr' cannot be created there"):
        safety.check_store_target(tmp_path / "p.zarr", resume=False, overwrite=False)
    with pytest.raises(ValueError, match="is not writable, so recipe file .*r.yaml' cannot be written"):
        safety.check_new_file(tmp_path / "r.yaml", overwrite=False, what="recipe file")
    assert list(tmp_path.iterdir()) == []
