"""The slide list: listing a cohort (engine) and the slides dock in a real viewer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_muvit.engine.slide_list import list_slides, output_state


def _store(path, shape, complete: bool, pixel_size=(0.5, 0.5)):
    """A small segmentation store (2 classes) written through `OutputStore`, finished or not."""
    from napari_muvit.engine.store import OutputStore

    h, w = shape
    store = OutputStore.create(path, image={"shape": (2, h, w), "chunks": (2, 64, 64), "dtype": "uint8",
                                            "factor": 1, "channel_names": ["tumour", "stroma"]},
                               region=(0, h, 0, w), labels=["tumour", "stroma"], pixel_size=pixel_size,
                               unit="micrometer", attrs={"task": "segmentation"})
    probs = np.zeros((2, h, w), np.uint8)
    probs[0, :, : w // 2] = 255
    labels = np.where(probs[0] > 0, 1, 2).astype(np.uint8)
    store.write_block((0, h, 0, w), probs, labels)
    if complete:
        store.build_pyramid()
        store.set_meta(complete=True)
    return store


@pytest.fixture
def cohort(tmp_path):
    """Three slides (RGB TIFF, 2-channel OME-TIFF, a broken NDPI) and stores: a complete, b partial."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "slides"
    folder.mkdir()
    a = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    tifffile.imwrite(folder / "a.tif", a, tile=(64, 64), photometric="rgb", resolution=(2e4, 2e4),
                     resolutionunit="CENTIMETER", metadata=None)
    b = rng.integers(0, 4000, (2, 256, 320), dtype=np.uint16)
    tifffile.imwrite(folder / "b.ome.tif", b, metadata={"axes": "CYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
    (folder / "c.ndpi").write_bytes(b"not a slide")
    (folder / "notes.txt").write_text("not a slide\n")
    out = tmp_path / "outputs"
    out.mkdir()
    _store(out / "a.zarr", (300, 400), complete=True)
    _store(out / "b.zarr", (256, 320), complete=False, pixel_size=(0.25, 0.25))
    return folder, out, a, b


def test_list_slides_sizes_formats_and_output_states(cohort, tmp_path):
    folder, out, _, _ = cohort
    slides = list_slides(folder, out)
    assert [s.name for s in slides] == ["a.tif", "b.ome.tif", "c.ndpi"]
    a, b, c = slides
    assert a.shape == (300, 400) and a.pixel_size == (0.5, 0.5) and a.rgb and a.format == "TIFF"
    assert a.size_text() == "300 x 400 px (0.15 x 0.20 mm)" and a.pixel_text() == "0.5 µm"
    assert b.shape == (256, 320) and b.pixel_size == (0.25, 0.25) and b.n_channels == 2 and b.format == "OME-TIFF"
    assert (a.state, b.state, c.state) == ("complete", "partial", "none")
    assert c.shape is None and "c.ndpi" in c.error and c.format == "Hamamatsu NDPI"
    assert output_state(out / "missing.zarr") == "none"
    (out / "junk.zarr").mkdir()
    assert output_state(out / "junk.zarr") == "unreadable"
    # a .txt list (paths relative to it); stores beside the slides are outputs, not slides
    listing = tmp_path / "cohort.txt"
    listing.write_text("# two slides\nslides/b.ome.tif\nslides/a.tif\n")
    assert [s.name for s in list_slides(listing, out)] == ["b.ome.tif", "a.tif"]
    _store(folder / "a.zarr", (300, 400), complete=True)
    beside = list_slides(folder)  # outputs default to the slides' folder
    assert [s.name for s in beside] == ["a.tif", "b.ome.tif", "c.ndpi"] and beside[0].state == "complete"
    with pytest.raises(ValueError, match="neither a folder nor a .txt list"):
        list_slides(folder / "a.tif")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_slides(tmp_path / "nowhere")


def test_thumbnail_is_a_small_area_average_and_bounded_in_reads(cohort):
    from napari_muvit.engine.slide_list import thumbnail

    folder, _, a, b = cohort
    thumb = thumbnail(folder / "a.tif")
    # 400 px / 8 = 50 <= 64: factor-8 area average of the RGB slide
    expected = np.rint(a[:296].reshape(37, 8, 50, 8, 3).mean((1, 3)))
    assert thumb.shape == (37, 50, 3) and thumb.dtype == np.uint8
    np.testing.assert_array_equal(thumb, expected.astype(np.uint8))
    grey = thumbnail(folder / "b.ome.tif", side=40)  # 2 channels: first channel as grey, 1-99 % stretched
    assert grey.shape == (32, 40, 3) and (grey[..., 0] == grey[..., 2]).all() and grey.min() == 0 and grey.max() == 255
    # a slide stored at full resolution only would need a whole-slide read: no thumbnail
    assert thumbnail(folder / "a.tif", max_read_px=300 * 400 - 1) is None


def _binding(viewer, key: str):
    for k, func in viewer.keymap.items():
        if str(k) == key:
            return func
    raise AssertionError(f"{key} is not bound; bound: {[str(k) for k in viewer.keymap]}")


def test_slides_dock_opens_slides_with_outputs_and_steps_with_keys(make_napari_viewer, qtbot, cohort, monkeypatch):
    from napari_muvit.widgets import slides as slides_pkg
    from napari_muvit.widgets.slides.dock import SlideListWidget

    folder, out, a, b = cohort
    errors: list[str] = []
    monkeypatch.setattr(slides_pkg.dock, "show_error", errors.append)
    viewer = make_napari_viewer()
    user = viewer.add_points([[10, 10]], name="my notes")
    w = SlideListWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.source.value = str(folder)
    w.outputs.value = str(out)
    w.refresh.clicked.emit()
    t = w.table
    assert t.rowCount() == 3
    assert [t.cell_text(r, 0) for r in range(3)] == ["a.tif", "b.ome.tif", "c.ndpi"]
    assert [t.cell_text(r, 4) for r in range(3)] == ["complete", "partial", "none"]
    assert t.cell_text(0, 1) == "300 x 400 px (0.15 x 0.20 mm)" and t.cell_text(1, 2) == "0.25 µm"
    assert t.cell_text(0, 3) == "TIFF" and "could not be read" in t.cell_text(2, 1)
    assert w.status.text() == "3 slides, 1 with complete outputs"
    # read off the GUI thread; each thumbnail reaches the table by a queued signal, after the job may have ended
    qtbot.waitUntil(lambda: not w.thumbnails.job.running
                    and not any(t.item(r, 0).icon().isNull() for r in (0, 1)), timeout=30_000)
    assert [t.item(r, 0).icon().isNull() for r in range(3)] == [False, False, True]  # c.ndpi cannot be read
    assert t.item(0, 0).icon().availableSizes()[0].width() == 50  # a.tif: 400 px / 8

    t.cellClicked.emit(0, 0)  # one click: the slide and its outputs
    names = [layer.name for layer in viewer.layers]
    assert names[0] == "my notes" and "a" in names and "MuViT labels" in names
    img = viewer.layers["a"]
    assert img.rgb and tuple(img.scale) == (0.5, 0.5)
    np.testing.assert_array_equal(np.asarray(img.data[0][100:110, 200:210]), a[100:110, 200:210])
    labels = viewer.layers["MuViT labels"]
    assert tuple(labels.scale) == (0.5, 0.5)
    assert int(np.asarray(labels.data[0])[5, 10]) == 1 and int(np.asarray(labels.data[0])[5, 390]) == 2
    assert w.current == 0 and w.status.text() == "1 / 3: a.tif (complete outputs)"

    _binding(viewer, "PageDown")(viewer)  # next slide: a's layers go, b's come; the user's layer stays
    names = [layer.name for layer in viewer.layers]
    assert "a" not in names and "my notes" in names and w.current == 1
    chans = [layer for layer in viewer.layers if layer.name.startswith("b [")]
    assert len(chans) == 2 and tuple(chans[0].scale) == (0.25, 0.25)
    np.testing.assert_array_equal(np.asarray(chans[1].data[0][:4, :5]), b[1, :4, :5])
    assert "MuViT labels" in names  # the partial store shows its level 0

    _binding(viewer, "PageDown")(viewer)  # the broken slide: one sentence, the view stays on b
    assert w.current == 1 and len(errors) == 1 and "c.ndpi" in errors[0]
    _binding(viewer, "PageUp")(viewer)
    assert w.current == 0 and "a" in [layer.name for layer in viewer.layers] and user in viewer.layers
    assert len(viewer.layers) == 1 + 1 + len([x for x in viewer.layers if x.name.startswith("MuViT")])


def test_slides_dock_reports_a_bad_source(make_napari_viewer, tmp_path, monkeypatch):
    from napari_muvit.widgets import slides as slides_pkg
    from napari_muvit.widgets.slides.dock import SlideListWidget

    errors: list[str] = []
    monkeypatch.setattr(slides_pkg.dock, "show_error", errors.append)
    w = SlideListWidget(make_napari_viewer())
    w.source.value = str(tmp_path / "missing")
    w.refresh.clicked.emit()
    (tmp_path / "empty").mkdir()
    w.source.value = str(tmp_path / "empty")
    w.refresh.clicked.emit()
    assert len(errors) == 2 and "does not exist" in errors[0] and "holds no slide" in errors[1]
    assert w.table.rowCount() == 0


def test_slides_dock_runs_selected_slides_in_the_background_and_resumes(make_napari_viewer, qtbot, tmp_path,
                                                                        monkeypatch):
    import csv

    w, errors = _dock_on_tiffs(make_napari_viewer, tmp_path, monkeypatch, ("s1", "s2", "s3"), (96, 128), 32, seed=3)
    assert [w.table.cell_text(r, 4) for r in range(3)] == ["none", "none", "none"]
    qtbot.waitUntil(lambda: not w.thumbnails.job.running
                    and not any(w.table.item(r, 0).icon().isNull() for r in range(3)), timeout=30_000)
    w.table.selectRow(0)
    w.table.selectionModel().select(w.table.model().index(2, 0), w.table.selectionModel().Select
                                    | w.table.selectionModel().Rows)
    assert w.selected_rows() == [0, 2]
    w.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.batch.running and w.run_button.isEnabled(), timeout=120_000)
    assert errors == []
    assert [w.table.cell_text(r, 4) for r in range(3)] == ["complete", "none", "complete"]
    # a row whose state changed keeps its thumbnail (96 x 128 px slides: 2 x 2 px averages, 64 px wide)
    assert [w.table.item(r, 0).icon().isNull() for r in range(3)] == [False, False, False]
    assert [w.table.item(r, 0).icon().availableSizes()[0].width() for r in range(3)] == [64, 64, 64]
    assert (tmp_path / "out" / "s1.zarr").is_dir() and not (tmp_path / "out" / "s2.zarr").exists()
    with open(tmp_path / "out" / "summary.csv") as fh:
        rows = {Path(r["slide"]).name: r for r in csv.DictReader(fh)}
    assert {k: r["status"] for k, r in rows.items()} == {"s1.tif": "done", "s3.tif": "done"}
    assert int(rows["s1.tif"]["tiles_done"]) == int(rows["s1.tif"]["tiles"]) > 0
    assert w.run_status.text().startswith("2 / 2 slides with complete outputs")
    # all rows now: finished slides are skipped, only s2 is predicted
    w.table.clearSelection()
    w.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.batch.running and w.run_button.isEnabled(), timeout=120_000)
    assert [w.table.cell_text(r, 4) for r in range(3)] == ["complete", "complete", "complete"]
    result = w.batch.job.result
    assert [(Path(r.slide).name, r.status) for r in result.rows] == [
        ("s1.tif", "skipped"), ("s2.tif", "done"), ("s3.tif", "skipped")]


def test_a_scale_without_a_unit_is_not_shown_as_micrometres():
    from napari_muvit.engine.slide_list import SlideInfo

    info = SlideInfo(path="s.zarr", store="o/s.zarr", state="none", format="OME-Zarr", shape=(2048, 2048),
                     pixel_size=(1.0, 1.0), unit=None)
    assert info.pixel_text() == "unknown" and info.size_text() == "2048 x 2048 px"
    info.unit = "micrometer"
    assert info.pixel_text() == "1 µm" and info.size_text() == "2048 x 2048 px (2.05 x 2.05 mm)"


def test_slides_dock_cancels_a_batch_partway_and_resumes_it(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    import csv

    w, errors = _dock_on_tiffs(make_napari_viewer, tmp_path, monkeypatch, ("s1", "s2"), (512, 512), 64, seed=5)
    w.run_button.clicked.emit()
    qtbot.waitUntil(lambda: w.batch.job.done >= 1, timeout=60_000)  # the first tiles of the first slide
    w.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.batch.running and w.run_button.isEnabled(), timeout=60_000)
    assert errors == []
    assert w.run_status.text() == "cancelled; Run continues where it stopped and skips finished slides"
    states = dict(zip(("s1.tif", "s2.tif"), [w.table.cell_text(r, 4) for r in range(2)]))
    # the cancel stopped the batch: not everything is complete, and a slide it was in the middle of is partial
    assert set(states.values()) <= {"complete", "partial", "none"} and "complete" != states["s2.tif"], states
    assert "partial" in states.values() or states["s2.tif"] == "none", states
    # Run again: complete slides are skipped, an interrupted one resumed, the rest predicted
    w.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.batch.running and w.run_button.isEnabled(), timeout=120_000)
    assert [w.table.cell_text(r, 4) for r in range(2)] == ["complete", "complete"]
    with open(tmp_path / "out" / "summary.csv") as fh:
        rows = {Path(r["slide"]).name: r for r in csv.DictReader(fh)}
    for name, before in states.items():
        row = rows[name]
        if before == "complete":
            assert row["status"] == "skipped", row
        else:  # partial (resumed: engine tests check a resumed store equals an uninterrupted one) or none
            assert row["status"] == "done" and int(row["tiles_done"]) == int(row["tiles"]) > 0, row


def _dock_on_tiffs(make_napari_viewer, tmp_path, monkeypatch, names, shape, tile, seed):
    """A slides dock listing random tiled TIFFs ``names`` of ``shape``, with a tiny model and outputs in
    ``tmp_path/out``; returns the dock and the list of error notifications it shows."""
    from napari_muvit.engine.testing import tiny_segmenter
    from napari_muvit.model import save_model
    from napari_muvit.widgets import slides as slides_pkg
    from napari_muvit.widgets.slides.dock import SlideListWidget

    errors: list[str] = []
    monkeypatch.setattr(slides_pkg.dock, "show_error", errors.append)
    model = save_model(tiny_segmenter(levels=(1, 4), patch=4, crop=32, n_classes=3), tmp_path / "tiny")
    folder = tmp_path / "slides"
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for name in names:
        tifffile.imwrite(folder / f"{name}.tif", rng.integers(0, 255, shape, dtype=np.uint8), tile=(tile, tile))
    w = SlideListWidget(make_napari_viewer())
    w.source.value = str(folder)
    w.outputs.value = str(tmp_path / "out")
    w.model.value = str(model)
    w.foreground.setChecked(False)
    w.refresh.clicked.emit()
    return w, errors
