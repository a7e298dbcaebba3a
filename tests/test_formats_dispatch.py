"""Which reader a slide file goes to, format names for lists, and the extra named when one is missing.

Nikon ND2 and Leica LIF have no writer on the package index: they go through bioio's generic reader
with the bioio-nd2 / bioio-lif plugins (the path `test_data_readers.test_bioio_single_level_reader`
tests with a file bioio reads); here only the routing and the missing-plugin message are tested.
"""

import numpy as np
import pytest
import tifffile

from napari_muvit.data import formats, open_pyramid


@pytest.mark.parametrize(("name", "expected"), [
    ("a.ome.zarr", "OME-Zarr"), ("b.zarr", "OME-Zarr"), ("c.ome.tif", "OME-TIFF"), ("d.tiff", "TIFF"),
    ("e.svs", "Aperio SVS"), ("f.NDPI", "Hamamatsu NDPI"), ("g.mrxs", "MIRAX"), ("h.scn", "Leica SCN"),
    ("i.bif", "Ventana BIF"), ("j.czi", "Zeiss CZI"), ("k.nd2", "Nikon ND2"), ("l.lif", "Leica LIF"),
    ("m.dcm", "DICOM WSI"), ("n.png", "PNG"),
])
def test_format_names(tmp_path, name, expected):
    assert formats.format_name(tmp_path / name) == expected


@pytest.mark.parametrize(("suffix", "extra", "module"), [(".nd2", "nd2", "bioio_nd2"), (".lif", "lif", "bioio_lif")])
def test_missing_bioio_plugin_names_the_extra(tmp_path, monkeypatch, suffix, extra, module):
    path = tmp_path / f"scan{suffix}"
    path.write_bytes(b"")
    real = formats._has_module
    monkeypatch.setattr(formats, "_has_module", lambda m: False if m == module else real(m))
    with pytest.raises(ValueError, match=rf'install it with pip install "napari-muvit\[{extra}\]"'):
        open_pyramid(path)


@pytest.mark.parametrize("suffix", [".nd2", ".lif"])
def test_installed_bioio_plugin_is_left_to_bioio(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"scan{suffix}"
    path.write_bytes(b"")
    monkeypatch.setattr(formats, "_has_module", lambda m: True)
    assert formats.open_extra_format(path, "scan") is None


def test_plain_and_ome_tiffs_stay_with_tifffile(tmp_path):
    # a multi-channel OME-TIFF is not a vendor slide: tifffile keeps its channels and uint16 values
    a = np.random.default_rng(0).integers(0, 60000, (3, 64, 80), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "x.ome.tif", a, metadata={"axes": "CYX"})
    tifffile.imwrite(tmp_path / "y.tif", a[0], tile=(32, 32))
    assert formats.open_extra_format(tmp_path / "x.ome.tif", "x") is None
    assert formats.open_extra_format(tmp_path / "y.tif", "y") is None
    pyr = open_pyramid(tmp_path / "x.ome.tif")
    assert pyr.n_channels == 3 and pyr.dtype == np.uint16 and not pyr.rgb


def test_zarr_folder_is_not_taken_for_dicom(tmp_path):
    folder = tmp_path / "img.zarr"
    folder.mkdir()
    (folder / "zarr.json").write_text("{}")
    assert not formats.is_dicom_folder(folder)
    assert formats.open_extra_format(folder, "img") is None
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="is not an OME-Zarr image"):
        open_pyramid(empty)
