"""The plugin's npe2 contributions: discovered by napari, and each one opens from napari's menus."""

from __future__ import annotations

import npe2


def _manifest():
    pm = npe2.PluginManager.instance()
    pm.discover()
    return pm.get_manifest("napari-muvit")


def test_contributions_are_discovered():
    c = _manifest().contributions
    assert [r.command for r in c.readers] == ["napari-muvit.get_reader"]
    assert "*.svs" in c.readers[0].filename_patterns and c.readers[0].accepts_directories
    writers = {(w.command, tuple(w.layer_types)) for w in c.writers}
    assert ("napari-muvit.write_labels_zarr", ("labels",)) in writers
    assert ("napari-muvit.write_geojson", ("shapes",)) in writers
    assert ("napari-muvit.write_csv", ("points",)) in writers
    assert [s.key for s in c.sample_data] == ["synthetic_slide"]
    assert "MuViT predict" in [w.display_name for w in c.widgets]


def test_reader_is_offered_for_slides_only(tmp_path):
    pm = npe2.PluginManager.instance()

    def offered(name):
        return "napari-muvit" in [r.plugin_name for r in pm.iter_compatible_readers([str(tmp_path / name)])]

    assert offered("x.svs") and offered("x.ome.tiff") and offered("x.zarr")
    assert not offered("x.png")


def test_predict_widget_docks_from_the_plugin_menu(make_napari_viewer, monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_MUVIT_SETTINGS_DIR", str(tmp_path))
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-muvit", "MuViT predict")
    assert type(widget).__name__ == "PredictWidget"
    assert widget.model.source.currentText() == "demo" and widget.levels.chosen() == (1, 4, 16)
