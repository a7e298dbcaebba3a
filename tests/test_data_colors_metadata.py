"""The one class palette (`data.colors`) and the one NGFF metadata builder (`data.ome_metadata`)."""

import json

import numpy as np
import pytest

from napari_muvit.data.colors import (
    CARD_PALETTE,
    PALETTE,
    class_hex,
    class_rgb,
    class_rgba,
    color_to_rgba,
    hex_to_rgb,
    omero_hex,
    pad_class_colors,
    unit_rgba_to_255,
)
from napari_muvit.data.ome_metadata import (
    image_label,
    labels_group_attributes,
    multiscale,
    ome_attributes,
    ome_axes,
)

# what prediction stores wrote for classes without a colour of their own (engine/store.py's former _PALETTE)
STORE_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
]


def test_palette_colour_of_class_k_is_what_stores_wrote():
    assert list(PALETTE) == STORE_PALETTE
    for k in range(30):
        assert class_rgba(None, k) == (*STORE_PALETTE[k % 12], 255)
        assert class_rgb([], k) == STORE_PALETTE[k % 12]
        assert class_hex(None, k) == "#{:02x}{:02x}{:02x}".format(*STORE_PALETTE[k % 12])
    assert class_hex(None, 0) == "#e6194b"
    assert omero_hex(class_rgb(None, 3)) == "0082C8"


def test_card_colours_in_every_notation():
    colors = ["#ff8000", "00ff0080", (0.5, 0.25, 1.0), (10, 20, 30), None, "", [0.0, 0.0, 0.0, 0.5]]
    assert class_rgba(colors, 0) == (255, 128, 0, 255)
    assert class_rgba(colors, 1) == (0, 255, 0, 128)
    assert class_rgba(colors, 2) == (128, 64, 255, 255)  # 0-1 floats, rounded
    assert class_rgba(colors, 3) == (10, 20, 30, 255)  # 0-255 ints
    assert class_rgba(colors, 4) == (*STORE_PALETTE[4], 255)  # None -> palette
    assert class_rgba(colors, 5) == (*STORE_PALETTE[5], 255)  # "" -> palette
    assert class_rgba(colors, 6) == (0, 0, 0, 128)
    assert class_rgba(colors, 9) == (*STORE_PALETTE[9], 255)  # beyond the list -> palette
    assert color_to_rgba("#123456") == (0x12, 0x34, 0x56, 255)
    assert hex_to_rgb("#A0b1C2") == [160, 177, 194] == hex_to_rgb("a0b1c2ff")
    assert unit_rgba_to_255([1.0, 0.5, 0.0]) == [255, 128, 0, 255]
    assert unit_rgba_to_255(np.array([[0.2, 1.2, -0.1, 0.5]])) == [51, 255, 0, 128]


def test_card_palette_pads_like_finetune_did():
    from napari_muvit.engine.training.finetune import class_colors_for

    tab10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
             "#17becf"]
    assert list(CARD_PALETTE) == tab10
    assert pad_class_colors(None, 3) == tab10[:3]
    assert pad_class_colors(["#000000"], 12) == ["#000000", *tab10[1:], tab10[0], tab10[1]]
    assert class_colors_for(["#abcdef"], 2) == ["#abcdef", tab10[1]]


def test_multiscale_entry_and_transforms():
    m = multiscale("prediction", [4, 8, 16], pixel_size=(0.25, 0.25), unit="micrometer", origin_world=(512, 256),
                   translation=(10.0, 20.0), channel=True, kind="mean")
    assert list(m) == ["name", "axes", "datasets", "type"] and m["type"] == "mean"
    assert m["axes"] == [{"name": "c", "type": "channel"},
                         {"name": "y", "type": "space", "unit": "micrometer"},
                         {"name": "x", "type": "space", "unit": "micrometer"}]
    assert [d["path"] for d in m["datasets"]] == ["0", "1", "2"]
    # level 8: scale 8 * 0.25; centre of pixel 0 = T + (origin + 3.5) * p
    assert m["datasets"][1]["coordinateTransformations"] == [
        {"type": "scale", "scale": [1.0, 2.0, 2.0]},
        {"type": "translation", "translation": [0.0, 10 + (512 + 3.5) * 0.25, 20 + (256 + 3.5) * 0.25]}]
    # the synthetic slide's layout: no unit, s0.. paths, translation (2^k - 1) / 2
    s = multiscale("synthetic slide", [1, 2, 4], paths=["s0", "s1", "s2"], kind="mean")
    assert s["axes"] == [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    assert [d["coordinateTransformations"][1]["translation"] for d in s["datasets"]] == [[0.0, 0.0], [0.5, 0.5],
                                                                                         [1.5, 1.5]]
    # 3-D per-axis factors, no type
    z = multiscale("labels", [np.array([1.0, 1, 1]), np.array([1.0, 2, 2])], origin_world=np.zeros(3))
    assert "type" not in z and [a["name"] for a in z["axes"]] == ["z", "y", "x"]
    assert z["datasets"][1]["coordinateTransformations"][0]["scale"] == [1.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="one path per level"):
        multiscale("x", [1, 2], paths=["0"])
    with pytest.raises(ValueError, match="4 spatial axes"):
        ome_axes(4)


def test_image_label_and_group_attributes():
    lab = image_label(colors={1: class_rgba(None, 0), 2: (1, 2, 3, 4)}, classes={1: "background", 2: "tumour"},
                      source="../../")
    assert lab == {"version": "0.5",
                   "colors": [{"label-value": 1, "rgba": [230, 25, 75, 255]}, {"label-value": 2, "rgba": [1, 2, 3, 4]}],
                   "properties": [{"label-value": 1, "class": "background"}, {"label-value": 2, "class": "tumour"}],
                   "source": {"image": "../../"}}
    assert image_label() == {"version": "0.5"}
    attrs = ome_attributes(multiscale("a", [1]), image_label=lab)
    assert list(attrs) == ["version", "multiscales", "image-label"] and len(attrs["multiscales"]) == 1
    assert list(ome_attributes([multiscale("a", [1])], omero={"channels": []})) == ["version", "multiscales", "omero"]
    assert labels_group_attributes(["prediction"]) == {"version": "0.5", "labels": ["prediction"]}
    json.dumps(attrs)  # plain JSON types only


def test_written_metadata_validates_against_ngff_models(tmp_path):
    zarr = pytest.importorskip("zarr")
    models = pytest.importorskip("ome_zarr_models.v05")

    root = zarr.open_group(str(tmp_path / "img.zarr"), mode="w", zarr_format=3)
    for k, n in enumerate((64, 32)):
        root.create_array(str(k), shape=(2, n, n), chunks=(2, 32, 32), dtype="uint8", dimension_names=["c", "y", "x"])
    root.attrs["ome"] = ome_attributes(multiscale("img", [1, 2], pixel_size=(0.5, 0.5), unit="micrometer",
                                                  channel=True, kind="mean"))
    img = models.Image.from_zarr(root)
    assert len(img.attributes.ome.multiscales[0].datasets) == 2
