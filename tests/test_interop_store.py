"""A prediction store made from a region of a translated slide overlays the slide in napari."""

import numpy as np
import pytest

from napari_muvit.widgets._reader import read_slide
from test_interop_ome import _napari_position, _write_5d


def test_prediction_of_a_translated_region_overlays_the_slide(tmp_path):
    """Slide (translated, 0.5 um) and the store predicted for a region of it: the same world point is at
    the same napari position in both, through the plugin's reader."""
    import torch

    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe
    from napari_muvit.engine.testing import PixelSegmenter

    torch.set_num_threads(1)
    rng = np.random.default_rng(3)
    data = rng.random((1, 128, 160)).astype(np.float32)
    path = tmp_path / "slide.ome.zarr"
    _write_5d(path, data, "0.5", n_levels=1)
    out = tmp_path / "pred.zarr"
    region = (32, 96, 64, 128)
    predict(Recipe(source=str(path), out=str(out), tile=32, overlap=8, region=region,
                   normalization={"policy": "none"}), model=PixelSegmenter(w=(2.0, -1.0), b=(0.0, 0.0)))
    slide_layer = read_slide(str(path))[0][1]
    store_layers = read_slide(str(out))
    prob_data, prob = next((d, kw) for d, kw, kind in store_layers if kind == "image")
    lab_data, labels = next((d, kw) for d, kw, kind in store_layers if kind == "labels")
    for yx in ((40, 70), (95, 127), (32, 64)):  # slide pixels inside the region
        where = _napari_position(slide_layer, yx)  # napari position of that slide pixel
        v = float(data[0, yx[0], yx[1]])
        p0 = 1 / (1 + np.exp(-3 * v))  # softmax of logits (2v, -v)
        # the store pixel drawn at that position holds that pixel's prediction
        idx = (where - np.asarray(prob["translate"])) / np.asarray(prob["scale"])
        np.testing.assert_allclose(idx, np.round(idx), atol=1e-9)
        level0 = prob_data[0] if isinstance(prob_data, list) else prob_data
        value = np.asarray(level0[int(round(idx[0])), int(round(idx[1]))])
        top = 255.0 if value.dtype == np.uint8 else 1.0  # probabilities may be stored as uint8
        assert float(value) / top == pytest.approx(p0, abs=0.5 / top + 1e-4)
        idx = (where - np.asarray(labels["translate"])) / np.asarray(labels["scale"])
        lab0 = lab_data[0] if isinstance(lab_data, list) else lab_data
        assert int(np.asarray(lab0)[int(round(idx[0])), int(round(idx[1]))]) == (1 if p0 > 0.5 else 2)
    # the store and its labels are valid NGFF 0.5 for ome-zarr-models
    import zarr
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    root = zarr.open_group(str(out), mode="r")
    Image.from_zarr(root)
    ImageLabel.from_zarr(root["labels/prediction"])
