"""Overlays that show the answer: class colours, see-through background, one colour per probability layer,
a legend, attention maps on a shared scale with a colour bar and plain-words legend."""

from __future__ import annotations

import numpy as np
import pytest

CLASSES = ["background", "cell", "stroma"]
COLORS = ["#101010", "#e6503c", "#3caae6"]


def _rgb(hex_color):
    return np.array([int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5)])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import torch

    from napari_muvit.data import open_pyramid
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe
    from napari_muvit.engine.testing import PixelSegmenter

    torch.set_num_threads(1)
    img = np.zeros((128, 128), np.float32)
    img[30:60, 70:100] = 3.0  # "cell" where bright, "background" elsewhere
    model = PixelSegmenter(w=(0.0, 2.0, 0.8), b=(2.0, 0.0, 0.0))
    model.card.class_names, model.card.class_colors = list(CLASSES), list(COLORS)
    out = tmp_path_factory.mktemp("overlay") / "p.zarr"
    predict(Recipe(out=str(out), tile=32, overlap=8, normalization={"policy": "none"}), model=model,
            pyramid=open_pyramid(img))
    return out


def test_prediction_layers_use_the_card_colours_with_background_see_through(make_napari_viewer, store):
    from napari_muvit.widgets.layer_updates import add_or_update
    from napari_muvit.widgets.prediction_job import load_outputs

    viewer = make_napari_viewer()
    for tup in load_outputs(store).layers:
        add_or_update(viewer, tup)
    labels = viewer.layers["MuViT labels"]
    rgba = labels.colormap.map(np.array([0, 1, 2, 3]))
    assert rgba[0, 3] == 0 and rgba[1, 3] == 0  # not predicted, background: see-through
    np.testing.assert_allclose(rgba[2, :3], _rgb(COLORS[1]), atol=1e-3)  # cell in the card's colour
    np.testing.assert_allclose(rgba[3, :3], _rgb(COLORS[2]), atol=1e-3)
    assert rgba[2, 3] == 1 and rgba[3, 3] == 1
    # the tissue under the background shows: the labels of a background pixel draw nothing
    data = np.asarray(labels.data[0] if labels.multiscale else labels.data)
    assert data[5, 5] == 1 and data[45, 85] == 2
    # one heatmap per foreground class, each in its class colour, see-through at probability 0
    probs = [ly for ly in viewer.layers if ly.name.startswith("MuViT p(")]
    assert [ly.name for ly in probs] == ["MuViT p(cell)", "MuViT p(stroma)"]
    for layer, color in zip(probs, COLORS[1:]):
        assert layer.blending == "translucent"
        low, high = layer.colormap.map(np.array([0.0, 1.0]))
        assert low[3] == 0
        np.testing.assert_allclose(high[:3], _rgb(color), atol=1e-3)
    assert probs[0].colormap.name != probs[1].colormap.name


def test_predict_dock_shows_a_class_legend(make_napari_viewer, tmp_path, monkeypatch):
    from napari_muvit.model import load_model
    from napari_muvit.widgets.predict.dock import PredictWidget

    monkeypatch.setenv("NAPARI_MUVIT_SETTINGS_DIR", str(tmp_path / "settings"))
    viewer = make_napari_viewer()
    w = PredictWidget(viewer, use_process=False)
    w.model.source.setCurrentText("demo")
    w._on_model_changed()
    card = load_model("demo").card
    entries = w.legend.entries
    assert [name for name, _ in entries] == card.class_names
    assert entries[0][1] is None  # background: see-through, said in words
    for (_, color), card_color in zip(entries[1:], card.class_colors[1:]):
        assert color == card_color.lower()[:7]
    text = w.legend.text()
    assert "see-through" in text and all(name in text for name in card.class_names[1:])
    assert w.legend.toolTip()


def _view(maxima):
    from napari_muvit.widgets.attention.overlay import ProbeView

    levels = (1, 4, 16)
    maps = [np.full((8, 8), m / 2, np.float32) for m in maxima]
    for m, top in zip(maps, maxima):
        m[3, 3] = top
    bboxes = [np.array([[64 - 32 * lv, 64 - 32 * lv], [64 + 31 * lv, 64 + 31 * lv]], float) for lv in levels]
    return ProbeView(levels, maps, bboxes, np.array([64.0, 64.0]), 1, 8)


def test_attention_maps_share_one_scale_with_a_colour_bar(make_napari_viewer):
    from napari_muvit.widgets.attention.overlay import MAP_PREFIX, AttentionOverlay

    viewer = make_napari_viewer()
    overlay = AttentionOverlay(viewer)
    view = _view([0.2, 0.05, 0.01])
    overlay.show(view)  # shared by default
    maps = [viewer.layers[f"{MAP_PREFIX}{lv}"] for lv in (1, 4, 16)]
    assert [tuple(ly.contrast_limits) for ly in maps] == [pytest.approx((0.0, 0.2))] * 3
    assert [ly.colorbar.visible for ly in maps] == [True, False, False]
    # no attention is see-through: a coarse map does not veil the slide
    assert maps[2].colormap.map(np.array([0.0]))[0, 3] == 0
    assert "one scale for all levels, 0 to 0.2" in overlay.legend()
    assert "x1 0.2, x4 0.05, x16 0.01" in overlay.legend()  # each level's own largest value, in words
    overlay.shared_scale = False
    overlay.show(view)
    assert [ly.contrast_limits[1] for ly in maps] == pytest.approx([0.2, 0.05, 0.01])
    assert all(ly.colorbar.visible for ly in maps)
    assert "own maximum" in overlay.legend()


def test_attention_dock_scale_toggle_restyles_without_probing(make_napari_viewer, monkeypatch, qtbot):
    from napari_muvit.widgets.attention.dock import AttentionProbeWidget
    from napari_muvit.widgets.attention.overlay import MAP_PREFIX

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((256, 256), np.float32), name="slide")
    widget = AttentionProbeWidget(viewer)
    probed = []
    monkeypatch.setattr(AttentionProbeWidget, "probe", lambda self, yx: probed.append(yx))
    view = _view([0.3, 0.1, 0.02])
    widget._t_request = 0.0
    widget._on_result({"levels": view.levels, "maps": view.maps, "bboxes": view.bboxes,
                       "query_world_yx": view.query_world_yx, "query_level": 1, "patch_size": 8,
                       "level_share": np.ones(3) / 3, "tile_share": np.ones(3) / 3,
                       "info": {"compute_s": 0.0, "num_layers": 2, "heads": 2}})
    qtbot.waitUntil(lambda: not widget.steps.pending, timeout=5000)  # the first probe's layers, one per turn
    assert viewer.layers[f"{MAP_PREFIX}16"].contrast_limits[1] == pytest.approx(0.3)
    assert "one scale" in widget._legend.text()
    widget._shared.setChecked(False)
    assert viewer.layers[f"{MAP_PREFIX}16"].contrast_limits[1] == pytest.approx(0.02)
    assert "own maximum" in widget._legend.text() and probed == []
    # every control explains itself
    for control in (widget._image, widget._model, widget._levels, widget._layer, widget._head,
                    widget._query_level, widget._shared, widget._on_click, widget._hover, widget._feature_btn,
                    widget._clear_btn):
        assert control.toolTip(), type(control).__name__
    assert "rollout" in widget._layer.toolTip() and "patch" in widget._query_level.toolTip()
