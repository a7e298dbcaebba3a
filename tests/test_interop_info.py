"""`napari-muvit info SLIDE` describes slides written by other tools (ome-zarr-py, tifffile)."""

import json

import numpy as np
import tifffile
import zarr
from ome_zarr.format import FormatV05
from ome_zarr.writer import write_multiscale

from napari_muvit.cli import main


def test_info_describes_an_ome_zarr_slide(tmp_path, capsys):
    path = tmp_path / "s.ome.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    data = np.zeros((1, 3, 1, 96, 128), np.uint8)
    ct = [[{"type": "scale", "scale": [1, 1, 1, 0.25 * f, 0.25 * f]},
           {"type": "translation", "translation": [0, 0, 0, 10 + 0.125 * (f - 1), 20 + 0.125 * (f - 1)]}]
          for f in (1, 2, 4)]
    write_multiscale([data, data[..., ::2, ::2], data[..., ::4, ::4]], root, axes=[
        {"name": "t", "type": "time"}, {"name": "c", "type": "channel"},
        {"name": "z", "type": "space", "unit": "micrometer"}, {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"}], fmt=FormatV05(), coordinate_transformations=ct)
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "slide" and info["format"] == "OME-Zarr 0.5" and info["dims"] == "y, x"
    assert info["shape"] == [96, 128] and info["level_shapes"] == [[96, 128], [48, 64], [24, 32]]
    assert info["factors"] == [[1, 1], [2, 2], [4, 4]] and info["stored_levels"] == 3
    assert info["pixel_size"] == [0.25, 0.25] and info["unit"] == "micrometer"
    assert info["channels"] == 3 and info["rgb"] is True and info["channel_names"] == ["red", "green", "blue"]
    assert info["translation"] == [10.0, 20.0] and info["dtype"] == "uint8"
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "translation: [10.0, 20.0]" in text and "format: OME-Zarr 0.5" in text


def test_info_describes_an_ome_tiff_and_refuses_junk(tmp_path, capsys):
    data = np.zeros((2, 64, 80), np.uint16)
    tifffile.imwrite(tmp_path / "c.ome.tif", data, metadata={
        "axes": "CYX", "Channel": {"Name": ["DAPI", "GFP"]}, "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    assert main(["info", str(tmp_path / "c.ome.tif"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "OME-TIFF" and info["channel_names"] == ["DAPI", "GFP"] and not info["rgb"]
    assert info["pixel_size"] == [0.5, 0.5] and info["translation"] == [0.0, 0.0] and info["stored_levels"] == 1
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    assert main(["info", str(tmp_path / "junk.tif")]) == 2
    err = capsys.readouterr().err.strip()
    assert "junk.tif" in err and "\n" not in err
