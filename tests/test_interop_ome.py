"""OME-Zarr and OME-TIFF as other tools write them: translations, 5-D t,c,z,y,x, bioformats2raw, RGB.

Inputs are written with ome-zarr-py and tifffile; positions are checked numerically (the napari world
position of a known pixel), not by layer type.
"""

import json

import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.writer import write_multiscale, write_multiscale_labels

from napari_muvit.data import foreground_mask, open_pyramid
from napari_muvit.widgets._reader import read_slide

FORMATS = {"0.4": FormatV04, "0.5": FormatV05}
T_YX = (100.0, 200.0)  # slide translation, micrometres
PS = 0.5  # level-0 pixel, micrometres


def _write_5d(path, data_cyx, version, translation=T_YX, pixel=PS, n_levels=2, z=1):
    """A 5-D t,c,z,y,x image (t = 1, ``z`` planes) written by ome-zarr-py with scale + translation."""
    fmt = FORMATS[version]()
    root = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    base = np.repeat(data_cyx[None, :, None], z, axis=2)
    levels, transforms = [], []
    for k in range(n_levels):
        f = 2**k
        levels.append(base[..., ::f, ::f])
        transforms.append([
            {"type": "scale", "scale": [1.0, 1.0, 1.0, pixel * f, pixel * f]},
            {"type": "translation", "translation": [0.0, 0.0, 0.0, translation[0] + (f - 1) / 2 * pixel,
                                                    translation[1] + (f - 1) / 2 * pixel]},
        ])
    write_multiscale(levels, root, axes="tczyx", fmt=fmt, coordinate_transformations=transforms)
    return root


def _napari_position(kwargs, index_yx):
    """napari world position of data index ``index_yx`` of a layer: ``index * scale + translate``."""
    return np.asarray(index_yx, float) * np.asarray(kwargs["scale"])[-2:] + np.asarray(kwargs["translate"])[-2:]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_5d_singleton_tz_is_2d_with_translation(tmp_path, version):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4000, (2, 96, 128), dtype=np.uint16)
    path = tmp_path / "slide.ome.zarr"
    _write_5d(path, data, version)
    pyr = open_pyramid(path)
    assert pyr.spatial_ndim == 2 and pyr.shape == (96, 128) and pyr.n_channels == 2
    assert pyr.factors == [(1, 1), (2, 2)]
    assert pyr.pixel_size == (PS, PS) and pyr.translation == T_YX
    img, _ = pyr.crops((40, 60), (1, 2), 16)
    np.testing.assert_array_equal(img[0], data[:, 33:49, 53:69])  # start = c - 7.5, rounded half up
    # the reader places pixel (3, 5) of every channel layer at T + index * pixel size
    layers = read_slide(str(path))
    assert len(layers) == 2
    for _data, kwargs, kind in layers:
        assert kind == "image"
        np.testing.assert_allclose(_napari_position(kwargs, (3, 5)), (100.0 + 1.5, 200.0 + 2.5))


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_labels_of_a_translated_slide_overlay_it(tmp_path, version):
    data = np.zeros((1, 64, 64), np.uint16)
    path = tmp_path / "slide.ome.zarr"
    root = _write_5d(path, data, version)
    lab = np.zeros((1, 1, 1, 32, 32), np.uint8)  # labels at level 2 (half resolution)
    lab[..., 4, 6] = 7
    lt = [[{"type": "scale", "scale": [1.0, 1.0, 1.0, 2 * PS, 2 * PS]},
           {"type": "translation", "translation": [0.0, 0.0, 0.0, T_YX[0] + 0.5 * PS, T_YX[1] + 0.5 * PS]}]]
    write_multiscale_labels([lab], root, name="cells", axes="tczyx", fmt=FORMATS[version](),
                            coordinate_transformations=lt)
    image, labels = read_slide(str(path))[0], read_slide(str(path))[1]
    assert labels[2] == "labels"
    data_l = labels[0][0] if isinstance(labels[0], list) else labels[0]
    assert np.asarray(data_l)[4, 6] == 7
    # labels pixel (4, 6) covers slide pixels (8..9, 12..13): its centre is the mean of their centres
    np.testing.assert_allclose(_napari_position(labels[1], (4, 6)),
                               np.mean([_napari_position(image[1], (8, 12)), _napari_position(image[1], (9, 13))],
                                       axis=0))
    np.testing.assert_allclose(_napari_position(labels[1], (4, 6)), (T_YX[0] + 8.5 * PS, T_YX[1] + 12.5 * PS))


def test_bioformats2raw_layout(tmp_path):
    path = tmp_path / "b2r.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.attrs["bioformats2raw.layout"] = 3
    data = np.arange(3 * 64 * 80, dtype=np.uint16).reshape(3, 64, 80)
    _write_5d(path / "0", data, "0.4", translation=(0.0, 0.0))
    zarr.open_group(str(path / "0"), mode="a").attrs["omero"] = {
        "channels": [{"label": n, "color": c} for n, c in (("DAPI", "0000FF"), ("GFP", "00FF00"), ("Cy5", "FF0000"))]}
    ome = zarr.open_group(str(path / "OME"), mode="w", zarr_format=2)
    ome.attrs["series"] = ["0"]
    (path / "OME" / "METADATA.ome.xml").write_text("<OME/>")
    lab = np.zeros((1, 1, 1, 64, 80), np.uint8)
    lab[..., 3, 4] = 9
    write_multiscale_labels([lab], zarr.open_group(str(path / "0"), mode="a"), name="nuclei", axes="tczyx",
                            fmt=FORMATS["0.4"](), coordinate_transformations=[[
                                {"type": "scale", "scale": [1.0, 1.0, 1.0, PS, PS]}]])
    pyr = open_pyramid(path)
    assert pyr.spatial_ndim == 2 and pyr.shape == (64, 80) and pyr.factors == [(1, 1), (2, 2)]
    assert pyr.channel_names == ["DAPI", "GFP", "Cy5"] and not pyr.rgb
    assert pyr.translation == (0.0, 0.0)
    # the reader opens the series' labels too, on the image
    layers = read_slide(str(path))
    assert [kind for _, _, kind in layers] == ["image"] * 3 + ["labels"]
    data_l, kw_l, _ = layers[-1]
    assert np.asarray(data_l[0] if isinstance(data_l, list) else data_l)[3, 4] == 9
    np.testing.assert_allclose(_napari_position(kw_l, (3, 4)), _napari_position(layers[0][1], (3, 4)))


def test_real_z_stack_stays_3d(tmp_path):
    data = np.ones((1, 32, 32), np.uint16)
    _write_5d(tmp_path / "z.zarr", data, "0.5", z=4)
    pyr = open_pyramid(tmp_path / "z.zarr")
    assert pyr.spatial_ndim == 3 and pyr.shape == (4, 32, 32)
    from napari_muvit.engine import Recipe
    from napari_muvit.engine.context import resolve
    from napari_muvit.engine.testing import tiny_segmenter

    with pytest.raises(ValueError, match="3-D"):  # refused before any model work or output
        resolve(Recipe(source=str(tmp_path / "z.zarr"), model="unused", out=str(tmp_path / "o.zarr")),
                model=tiny_segmenter(), pyramid=pyr)
    assert not (tmp_path / "o.zarr").exists()


def _rgb_slide(shape=(256, 320)):
    """Brightfield-like RGB: bright glass (~230) with darker tissue blobs."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    rgb = np.full((*shape, 3), 230, np.uint8)
    tissue = ((yy - 128) ** 2 + (xx - 120) ** 2) < 70**2
    rgb[tissue] = (150, 90, 160)
    return rgb


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_rgb_as_three_uint8_channels_is_brightfield_like_tiff(tmp_path, version):
    rgb = _rgb_slide()
    # one stored level, like the TIFF: coarser levels are averaged the same way for both
    _write_5d(tmp_path / "rgb.zarr", np.moveaxis(rgb, -1, 0), version, translation=(0.0, 0.0), n_levels=1)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    from_zarr, from_tiff = open_pyramid(tmp_path / "rgb.zarr"), open_pyramid(tmp_path / "rgb.tif")
    assert from_zarr.rgb and from_tiff.rgb
    assert from_zarr.channel_names == from_tiff.channel_names == ["red", "green", "blue"]
    mask_z, level_z = foreground_mask(from_zarr, level=4)
    mask_t, level_t = foreground_mask(from_tiff, level=4)
    assert level_z == level_t and mask_z.shape == mask_t.shape
    assert np.array_equal(mask_z, mask_t)
    # tissue (the dark disc) is foreground, glass is not
    assert mask_z[128 // level_z, 120 // level_z] and not mask_z[5, 5]
    # ome-zarr-py's own RGB display metadata (omero red/green/blue) keeps it RGB
    g = zarr.open_group(str(tmp_path / "rgb.zarr"), mode="a")
    omero = {"channels": [{"label": n, "color": c} for n, c in (("R", "FF0000"), ("G", "00FF00"), ("B", "0000FF"))]}
    if version == "0.5":
        g.attrs["ome"] = dict(g.attrs["ome"], omero=omero)
    else:
        g.attrs["omero"] = omero
    assert open_pyramid(tmp_path / "rgb.zarr").rgb


def test_three_uint8_fluorescence_channels_are_not_rgb(tmp_path):
    data = np.zeros((3, 64, 64), np.uint8)
    _write_5d(tmp_path / "f.zarr", data, "0.4", translation=(0.0, 0.0))
    g = zarr.open_group(str(tmp_path / "f.zarr"), mode="a")
    g.attrs["omero"] = {"channels": [{"label": n} for n in ("DAPI", "GFP", "mCherry")]}
    pyr = open_pyramid(tmp_path / "f.zarr")
    assert not pyr.rgb and pyr.channel_names == ["DAPI", "GFP", "mCherry"]
    g.attrs["omero"] = {"channels": [{"label": f"channel {i}", "color": c} for i, c in
                                     enumerate(("0000FF", "00FF00", "FF0000"))]}  # blue first: not RGB
    assert not open_pyramid(tmp_path / "f.zarr").rgb


def test_ome_tiff_channel_names(tmp_path):
    data = np.arange(4 * 64 * 64, dtype=np.uint16).reshape(4, 64, 64)
    names = ["DAPI", "GFP", "Cy3", "Cy5"]
    tifffile.imwrite(tmp_path / "c.ome.tif", data, metadata={"axes": "CYX", "Channel": {"Name": names},
                                                           "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
    pyr = open_pyramid(tmp_path / "c.ome.tif")
    assert pyr.n_channels == 4 and pyr.channel_names == names
    assert pyr.pixel_size == (0.25, 0.25) and not pyr.rgb
    from bioio import BioImage

    assert list(BioImage(str(tmp_path / "c.ome.tif")).channel_names) == names
    # the generic bioio path (formats without a dedicated reader) keeps them too
    from napari_muvit.data.slide_readers import open_with_bioio

    assert open_with_bioio(tmp_path / "c.ome.tif").channel_names == names
    json.dumps(pyr.channel_names)



@pytest.mark.parametrize("names,colors,rgb", [
    (None, None, True),  # ome-zarr-py's plain RGB
    (["Red", "Green", "Blue"], None, True),
    (["C:0", "C:1", "C:2"], ["FFFFFF"] * 3, True),  # generic names, one default colour: no evidence against
    (["Channel:0:0", "Channel:0:1", "Channel:0:2"], ["FF0000", "00FF00", "0000FF"], True),
    (["R", "G", "B"], [-16776961, 16711935, 65535], True),  # OME-XML signed RGBA ints
    (["DAPI", "GFP", "Cy5"], None, False),
    (None, ["0000FF", "00FF00", "FF0000"], False),
])
def test_brightfield_rgb_rule(names, colors, rgb):
    from napari_muvit.data.readers import is_brightfield_rgb

    assert is_brightfield_rgb(3, np.uint8, names, colors) is rgb
    assert not is_brightfield_rgb(3, np.uint16, names, colors) and not is_brightfield_rgb(4, np.uint8, names, colors)


def test_planar_ome_tiff_rgb_follows_the_same_rule(tmp_path):
    rgb = np.moveaxis(_rgb_slide((64, 64)), -1, 0).copy()
    tifffile.imwrite(tmp_path / "planar.ome.tif", rgb, photometric="minisblack",
                     metadata={"axes": "CYX", "Channel": {"Name": ["R", "G", "B"]}})
    tifffile.imwrite(tmp_path / "fluo.ome.tif", rgb, photometric="minisblack",
                     metadata={"axes": "CYX", "Channel": {"Name": ["DAPI", "GFP", "Cy5"]}})
    planar, fluo = open_pyramid(tmp_path / "planar.ome.tif"), open_pyramid(tmp_path / "fluo.ome.tif")
    assert planar.rgb and planar.channel_names == ["red", "green", "blue"]
    assert not fluo.rgb and fluo.channel_names == ["DAPI", "GFP", "Cy5"]
