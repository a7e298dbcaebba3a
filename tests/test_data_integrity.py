"""A pyramid that lies is refused: level shapes checked against scales, missing and corrupt chunks named."""

import logging
import os

import numpy as np
import pytest
import zarr

from napari_muvit.data import open_pyramid

YX = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]


def _write(path, arrays, scales, paths=None, zarr_format=3, chunks=16):
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    paths = paths or [f"s{k}" for k in range(len(arrays))]
    for k, arr in enumerate(arrays):
        root.create_array(f"s{k}", data=arr, chunks=(chunks,) * arr.ndim, compressors=None
                          if zarr_format == 3 else None)
    ms = {"axes": YX, "datasets": [
        {"path": p, "coordinateTransformations": [{"type": "scale", "scale": s}]} for p, s in zip(paths, scales)]}
    if zarr_format == 3:
        root.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
    else:
        root.attrs["multiscales"] = [dict(ms, version="0.4")]
    return root


def _pyr(n=64):
    a = np.arange(n * n, dtype=np.uint16).reshape(n, n)
    return [a, a[::2, ::2], a[::4, ::4], a[::16, ::16]]


def test_swapped_levels_are_refused(tmp_path):
    lv = _pyr()
    _write(tmp_path / "s.zarr", lv[:2], [[1, 1], [2, 2]], paths=["s1", "s0"])
    with pytest.raises(ValueError, match=r"level 0 .*|level 1 has shape \(64, 64\)"):
        open_pyramid(tmp_path / "s.zarr")


def test_integer_scale_pointing_at_wrong_array_is_refused(tmp_path):
    lv = _pyr()
    # a scale-4 dataset that holds the 16x smaller array: the scale is an exact integer, the shape is not
    _write(tmp_path / "w.zarr", [lv[0], lv[1], lv[3]], [[1, 1], [2, 2], [4, 4]])
    with pytest.raises(ValueError, match=r"level 2 has shape \(4, 4\) .*needs 16 pixels.*wrong arrays"):
        open_pyramid(tmp_path / "w.zarr")
    # the true pyramid opens, with the factors the scales say
    _write(tmp_path / "ok.zarr", lv[:3], [[1, 1], [2, 2], [4, 4]])
    assert open_pyramid(tmp_path / "ok.zarr").factors == [(1, 1), (2, 2), (4, 4)]


def test_missing_dataset_array_is_one_sentence(tmp_path):
    lv = _pyr()
    _write(tmp_path / "m.zarr", lv[:2], [[1, 1], [2, 2]], paths=["s0", "nope"])
    with pytest.raises(ValueError, match=r"level 1 names dataset 'nope' \(.*m.zarr/nope\), which is not a readable array"):
        open_pyramid(tmp_path / "m.zarr")


def _chunk_file(path, level, idx, zarr_format):
    if zarr_format == 3:
        return path / level / "c" / str(idx[0]) / str(idx[1])
    return path / level / f"{idx[0]}.{idx[1]}"


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_missing_chunk_warns_once_with_count_or_refuses_when_strict(tmp_path, zarr_format, caplog):
    lv = _pyr()
    path = tmp_path / "c.zarr"
    _write(path, lv[:2], [[1, 1], [2, 2]], zarr_format=zarr_format)
    for idx in ((1, 1), (1, 2)):
        os.remove(_chunk_file(path, "s0", idx, zarr_format))
    pyr = open_pyramid(path)
    with caplog.at_level(logging.WARNING, logger="napari_muvit.data.pyramid"):
        img, _ = pyr.crops((23, 39), (1,), 16)  # start = floor(c - 7): rows 16..31, cols 32..47: chunks (1, 2) only
        img2, _ = pyr.crops((23, 23), (1,), 16)  # chunk (1, 1), also missing: counted, not warned again
    msgs = [r.getMessage() for r in caplog.records if "missing" in r.getMessage()]
    assert len(msgs) == 1 and "chunk (1, 2)" in msgs[0] and "s0" in msgs[0] and "fill value" in msgs[0]
    assert not img.any() and not img2.any()  # fill value, as the spec says
    assert len(pyr.missing_chunks) == 2
    assert pyr.missing_chunks_message() == "2 source chunks of 'c' were missing and read as fill value (zeros)."
    # a present chunk reads its values and adds nothing
    img3, _ = pyr.crops((7, 7), (1,), 16)
    np.testing.assert_array_equal(img3[0, 0], lv[0][0:16, 0:16])
    assert len(pyr.missing_chunks) == 2
    strict = open_pyramid(path, strict=True)
    with pytest.raises(ValueError, match=r"chunk \(1, 2\) of array .*s0.* is missing from the store; strict"):
        strict.crops((23, 39), (1,), 16)


@pytest.mark.parametrize("cache", [True, False])
def test_corrupt_chunk_names_array_and_chunk(tmp_path, cache):
    lv = _pyr()
    path = tmp_path / "x.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    for k in range(2):
        root.create_array(f"s{k}", data=lv[k], chunks=(16, 16))  # default zstd compression
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": YX, "datasets": [
        {"path": f"s{k}", "coordinateTransformations": [{"type": "scale", "scale": [2**k, 2**k]}]}
        for k in range(2)]}]}
    _chunk_file(path, "s0", (0, 1), 3).write_bytes(b"this is not zstd data")
    pyr = open_pyramid(path)
    if not cache:
        pyr.chunk_cache.max_bytes = 0
    with pytest.raises(ValueError, match=r"of array .*s0.* could not be read .*damaged"):
        pyr.crops((8, 24), (1,), 16)
    np.testing.assert_array_equal(pyr.crops((39, 39), (1,), 16)[0][0, 0], lv[0][32:48, 32:48])


def test_truncated_metadata_names_the_file(tmp_path):
    lv = _pyr()
    path = tmp_path / "t.zarr"
    _write(path, lv[:2], [[1, 1], [2, 2]])
    level_meta = path / "s0" / "zarr.json"
    level_meta.write_text(level_meta.read_text()[:40])
    with pytest.raises(ValueError, match=r"level 0 names dataset 's0' .*t.zarr/s0.*metadata file .* not valid JSON"):
        open_pyramid(path)
    root_meta = path / "zarr.json"
    root_meta.write_text(root_meta.read_text()[:40])
    with pytest.raises(ValueError, match=r"t.zarr/zarr.json' is not valid JSON"):
        open_pyramid(path)
