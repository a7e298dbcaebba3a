"""Batch prediction: slide lists, one store per slide, summary.csv, failures reported, resumable."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
import zarr

from napari_muvit.cli import main
from napari_muvit.engine.batch import expand_slides, plan_outputs, run_batch, slide_stem
from napari_muvit.engine.recipe import Recipe
from napari_muvit.engine.testing import random_slide, tiny_segmenter


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from napari_muvit.model import save_model

    path = tmp_path_factory.mktemp("models") / "tiny"
    save_model(tiny_segmenter(), path)
    return path


def _slide(path, seed, shape=(64, 80), um=None):
    img = (random_slide(shape, seed=seed) * 1000).astype(np.uint16)
    if um is None:
        tifffile.imwrite(path, img)
    else:  # resolution tags in pixels per centimetre: the TIFF reader turns them into um per pixel
        tifffile.imwrite(path, img, resolution=(1e4 / um, 1e4 / um), resolutionunit=3)
    return path


def _summary(path):
    with open(path, newline="") as fh:
        return {r["slide"].rsplit("/", 1)[-1]: r for r in csv.DictReader(fh)}


def test_slide_lists_stems_and_output_checks(tmp_path):
    folder = tmp_path / "cohort"
    folder.mkdir()
    for name in ("b.svs", "a.ome.tiff", "notes.txt", ".hidden.tif"):
        (folder / name).write_text("x")
    (folder / "c.zarr").mkdir()
    (folder / "sub").mkdir()
    assert [p.name for p in expand_slides([folder])] == ["a.ome.tiff", "b.svs", "c.zarr"]
    assert [slide_stem(p) for p in expand_slides([folder])] == ["a", "b", "c"]
    listing = tmp_path / "list.txt"
    listing.write_text("# study 1\ncohort/b.svs\n\n/abs/x.ndpi  # absolute\n")
    assert [str(p) for p in expand_slides([listing])] == [str(folder / "b.svs"), "/abs/x.ndpi"]
    assert [p.name for p in expand_slides([folder / "b.svs", folder / "c.zarr"])] == ["b.svs", "c.zarr"]
    pairs = plan_outputs(expand_slides([folder]), tmp_path / "out")
    assert [str(s.relative_to(tmp_path)) for _, s in pairs] == ["out/a.zarr", "out/b.zarr", "out/c.zarr"]
    with pytest.raises(ValueError, match="would both write a.zarr"):
        plan_outputs([folder / "a.ome.tiff", tmp_path / "a.svs"], tmp_path / "out")
    with pytest.raises(ValueError, match="output store .*c.zarr' is the input .*which would destroy it"):
        plan_outputs([folder / "c.zarr"], folder)
    with pytest.raises(ValueError, match="lies inside the input"):
        plan_outputs([folder / "c.zarr", folder / "b.svs"], folder / "c.zarr" / "preds")
    model = tmp_path / "out" / "a.zarr"  # a model folder where a store would go
    with pytest.raises(ValueError, match="is the input"):
        run_batch([folder / "a.ome.tiff"], Recipe(model=str(model)), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was written
    with pytest.raises(ValueError, match="holds no slide"):
        expand_slides([folder / "sub"])
    with pytest.raises(ValueError, match="no slides were given"):
        expand_slides([])


def test_batch_command_reports_failures_and_resumes(tmp_path, model_dir, capsys, torch_one_thread):
    a = _slide(tmp_path / "a.tif", 1)
    b = _slide(tmp_path / "b.tif", 2, um=0.5)
    bad = tmp_path / "bad.tif"
    bad.write_text("not a tiff")
    out = tmp_path / "preds"
    argv = ["predict", a, bad, b, "--model", model_dir, "--tile", "32", "--overlap", "8", "--batch-size", "4",
            "--out-dir", out]
    assert main([str(v) for v in argv]) == 1  # one slide failed
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"[1/3] {a}: done") and lines[1].startswith(f"[2/3] {bad}: failed")
    assert lines[-1] == f"wrote {out / 'summary.csv'}: 2 done, 0 skipped, 1 failed, 0 incomplete"
    rows = _summary(out / "summary.csv")
    assert list(rows) == ["a.tif", "bad.tif", "b.tif"]
    assert [rows[k]["status"] for k in rows] == ["done", "failed", "done"]
    assert "bad.tif" in rows["bad.tif"]["error"] and rows["bad.tif"]["tiles"] == ""
    assert not (out / "bad.zarr").exists()
    # 64 x 80 px, stride 24: a 3 x 4 grid; every pixel predicted, so the class areas add up to the slide
    assert rows["a.tif"]["tiles"] == "12" and rows["a.tif"]["tiles_done"] == "12"
    names = [f"area:class {k}" for k in range(3)]
    assert rows["a.tif"]["area_unit"] == "px^2" and rows["b.tif"]["area_unit"] == "um^2"
    assert sum(float(rows["a.tif"][n] or 0) for n in names) == 64 * 80
    assert sum(float(rows["b.tif"][n] or 0) for n in names) == pytest.approx(64 * 80 * 0.25)
    lab = np.asarray(zarr.open_group(str(out / "a.zarr"), mode="r")["labels/prediction/0"][:])
    assert float(rows["a.tif"]["area:class 1"] or 0) == int((lab == 2).sum())

    # run again: finished slides are skipped (their rows kept), the broken one fails again
    assert main([str(v) for v in argv]) == 1
    again = _summary(out / "summary.csv")
    assert [again[k]["status"] for k in again] == ["skipped", "failed", "skipped"]
    assert again["a.tif"]["seconds"] == rows["a.tif"]["seconds"] and again["b.tif"][names[0]] == rows["b.tif"][names[0]]
    capsys.readouterr()

    _slide(bad, 3)  # the slide is fixed: only it is predicted now, and the batch succeeds
    assert main([str(v) for v in argv]) == 0
    final = _summary(out / "summary.csv")
    assert [final[k]["status"] for k in final] == ["skipped", "done", "skipped"] and final["bad.tif"]["error"] == ""
    assert "2 skipped" in capsys.readouterr().out

    # the cohort's measurements in one table: every store of the folder, annotations where there are some
    regions_dir = tmp_path / "annotations"
    regions_dir.mkdir()
    (regions_dir / "a.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"name": "box"},
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 20], [0, 20], [0, 0]]]}}]}))
    cohort = tmp_path / "cohort.csv"
    assert main(["measure", str(out), "--regions-dir", str(regions_dir), "--out", str(cohort), "--quiet"]) == 0
    table = list(csv.DictReader(open(cohort, newline="")))
    assert list(table[0])[:2] == ["store", "region"] and "area_um2" in table[0]
    assert sorted({(r["store"], r["region"]) for r in table}) == [
        ("a", "box"), ("a", "slide"), ("b", "slide"), ("bad", "slide")]
    box = [r for r in table if r["region"] == "box"]
    assert sum(int(r["pixels"]) for r in box if r["label"] not in ("", "0")) == 20 * 10
    a_slide = [r for r in table if r["store"] == "a" and r["region"] == "slide"]
    assert all(r["area_um2"] == "" for r in a_slide)  # slide a has no pixel size: px^2 only
    b_class0 = next(r for r in table if r["store"] == "b" and r["class"] == "class 0")
    assert float(b_class0["area_um2"]) == pytest.approx(float(final["b.tif"]["area:class 0"] or 0))
    assert main(["measure", str(out / "a.zarr"), str(out / "b.zarr"), "--regions", str(regions_dir / "a.geojson")]) == 2
    assert "--regions-dir" in capsys.readouterr().err

    # a folder as the single argument, and bad input of the batch form itself
    assert main(["predict", str(tmp_path), "--model", str(model_dir), "--out", "x.zarr", "--out-dir", str(out)]) == 2
    assert "drop --out" in capsys.readouterr().err
    assert main(["predict", str(a), str(b), "--model", str(model_dir)]) == 2
    assert "need --out-dir" in capsys.readouterr().err


def test_cancelled_slide_resumes_to_the_uninterrupted_result(tmp_path, model_dir, torch_one_thread):
    from napari_muvit.engine.predict import predict

    slides = [_slide(tmp_path / "s1.tif", 4, (96, 96)), _slide(tmp_path / "s2.tif", 5)]
    recipe = Recipe(model=str(model_dir), tile=32, overlap=8, batch_size=4)
    seen = []

    def progress(i, done, total):
        seen.append((i, done, total))

    polls = []

    def stop():  # the batch asks once before each slide; predict then asks between batches: stop at its 2nd
        polls.append(1)
        return len(polls) >= 3

    first = run_batch(slides, recipe, tmp_path / "out", progress=progress, cancel=stop)
    assert [r.status for r in first.rows] == ["incomplete"] and not first.ok
    assert {i for i, _, _ in seen} == {0} and seen[-1][2] == 16
    assert first.rows[0].tiles == 16 and first.rows[0].tiles_done < 16 and (tmp_path / "out" / "s1.zarr").is_dir()
    assert not (tmp_path / "out" / "s2.zarr").exists()  # later slides are not started after a cancel

    second = run_batch(slides, recipe, tmp_path / "out")
    assert [r.status for r in second.rows] == ["done", "done"] and second.ok
    assert second.rows[0].tiles_done == 16 and second.rows[1].tiles_done == 12
    predict(recipe.replace(source=str(slides[0]), out=str(tmp_path / "ref.zarr")))
    got = zarr.open_group(str(tmp_path / "out" / "s1.zarr"), mode="r")
    ref = zarr.open_group(str(tmp_path / "ref.zarr"), mode="r")
    assert np.array_equal(got["labels/prediction/0"][:], ref["labels/prediction/0"][:])
