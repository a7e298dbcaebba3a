"""DICOM WSI adapter (wsidicom) against VL Whole Slide Microscopy instances written with pydicom.

The writer below makes one TILED_FULL instance per pyramid level (and per optical path for
fluorescence), uncompressed, with the attributes the standard requires for a volume image. OpenSlide's
DICOM driver reads the same files as a second, independent reader.
"""

import numpy as np
import pytest

pytest.importorskip("wsidicom")
pydicom = pytest.importorskip("pydicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from napari_muvit.data import open_pyramid  # noqa: E402
from napari_muvit.data.formats import format_name  # noqa: E402

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage


def write_dicom_wsi(folder, levels, *, tile=64, mpp=0.5, paths=("1",)):
    """Write ``levels`` (finest first; ``(Y, X, 3)`` RGB or ``(P, Y, X)`` one plane per optical path)."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rgb = levels[0].ndim == 3 and levels[0].shape[-1] == 3 and len(paths) == 1
    h0, w0 = levels[0].shape[:2] if rgb else levels[0].shape[1:]
    n = 0
    for img in levels:
        planes = [img] if rgb else list(img)
        for path_id, plane in zip(paths, planes):
            h, w = plane.shape[:2]
            spp = 3 if rgb else 1
            ny, nx = -(-h // tile), -(-w // tile)
            pad = np.zeros((ny * tile, nx * tile, spp), np.uint8)
            pad[:h, :w] = plane.reshape(h, w, spp)
            frames = pad.reshape(ny, tile, nx, tile, spp).swapaxes(1, 2)
            n += 1
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = WSI_SOP_CLASS
            ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPClassUID, ds.SOPInstanceUID = WSI_SOP_CLASS, ds.file_meta.MediaStorageSOPInstanceUID
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
            ds.Modality, ds.ImageType = "SM", ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
            ds.PatientName, ds.PatientID, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "p", "1", "1", 1, n
            ds.ContainerIdentifier, ds.DimensionOrganizationType = "slide-1", "TILED_FULL"
            ds.Rows = ds.Columns = tile
            ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = h, w
            ds.TotalPixelMatrixFocalPlanes, ds.NumberOfOpticalPaths = 1, 1
            ds.NumberOfFrames = ny * nx
            ds.SamplesPerPixel = spp
            ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
            if rgb:
                ds.PlanarConfiguration = 0
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
            ds.ImagedVolumeWidth, ds.ImagedVolumeHeight, ds.ImagedVolumeDepth = w0 * mpp / 1e3, h0 * mpp / 1e3, 1e-3
            f = w0 / w
            measures = Dataset()
            measures.PixelSpacing = [mpp * f / 1e3, mpp * f / 1e3]  # mm, row then column
            measures.SliceThickness = 1e-3
            shared = Dataset()
            shared.PixelMeasuresSequence = Sequence([measures])
            ds.SharedFunctionalGroupsSequence = Sequence([shared])
            optical = Dataset()
            optical.OpticalPathIdentifier = path_id
            optical.OpticalPathDescription = path_id
            ds.OpticalPathSequence = Sequence([optical])
            ds.PixelData = frames.tobytes()
            ds.save_as(folder / f"instance{n}.dcm", enforce_file_format=True)


def _start(center, f: int, size: int) -> np.ndarray:
    return np.floor((np.asarray(center) - (f - 1) / 2) / f - (size - 1) / 2 + 0.5).astype(int)


def _window(level: np.ndarray, start, size: int) -> np.ndarray:
    """``level (C, Y, X)`` window at ``start`` as ``(C, size, size)`` float32, zero outside."""
    out = np.zeros((level.shape[0], size, size), np.float32)
    y0, x0 = max(start[0], 0), max(start[1], 0)
    y1, x1 = min(start[0] + size, level.shape[1]), min(start[1] + size, level.shape[2])
    out[:, y0 - start[0]:y1 - start[0], x0 - start[1]:x1 - start[1]] = level[:, y0:y1, x0:x1]
    return out


def test_rgb_dicom_wsi(tmp_path):
    a = np.random.default_rng(0).integers(0, 255, (300, 420, 3), dtype=np.uint8)
    folder = tmp_path / "slide"
    write_dicom_wsi(folder, [a, a[::2, ::2], a[::4, ::4]], tile=64, mpp=0.5)
    assert format_name(folder) == "DICOM WSI"
    for source in (folder, folder / "instance1.dcm"):  # the folder, or any of its files
        pyr = open_pyramid(source)
        assert pyr.metadata["format"] == "DICOM WSI"
        assert pyr.rgb and pyr.n_channels == 3 and pyr.dtype == np.uint8
        assert pyr.shape == (300, 420) and pyr.factors == [(1, 1), (2, 2), (4, 4)]
        assert pyr.pixel_size == (0.5, 0.5) and pyr.unit == "micrometer"
    assert [pyr.level_shape(k) for k in range(3)] == [(300, 420), (150, 210), (75, 105)]
    size = 64
    for center in ((150, 210), (290, 10)):  # inside, and past the bottom-left corner
        img, bbox = pyr.crops(center, (1, 2, 4), size)
        for j, f in enumerate((1, 2, 4)):
            s = _start(center, f, size)
            np.testing.assert_array_equal(img[j], _window(np.moveaxis(a[::f, ::f], 2, 0), s, size))
            np.testing.assert_allclose(bbox[j, 0], s * f + (f - 1) / 2)
    # OpenSlide's DICOM driver reads the same pixels from the same files
    openslide = pytest.importorskip("openslide")
    slide = openslide.OpenSlide(str(folder / "instance1.dcm"))
    assert slide.level_dimensions[:3] == ((420, 300), (210, 150), (105, 75))
    np.testing.assert_array_equal(np.asarray(slide.read_region((0, 0), 1, (210, 150)))[..., :3], a[::2, ::2])


def test_fluorescence_dicom_wsi_one_channel_per_optical_path(tmp_path):
    rng = np.random.default_rng(1)
    planes = rng.integers(0, 255, (2, 256, 320), dtype=np.uint8)
    folder = tmp_path / "fluo"
    write_dicom_wsi(folder, [planes, planes[:, ::2, ::2]], tile=128, mpp=0.25, paths=("DAPI", "GFP"))
    pyr = open_pyramid(folder)
    assert not pyr.rgb and pyr.n_channels == 2 and pyr.channel_names == ["DAPI", "GFP"]
    assert pyr.factors == [(1, 1), (2, 2)] and pyr.pixel_size == (0.25, 0.25)
    img, _ = pyr.crops((128, 160), (1, 2), 32)
    np.testing.assert_array_equal(img[0], planes[:, 113:145, 145:177])  # centre 128 -> pixels 113..144
    np.testing.assert_array_equal(img[1], _window(planes[:, ::2, ::2], _start((128, 160), 2, 32), 32))


def test_missing_wsidicom_names_the_extra(tmp_path, monkeypatch):
    import sys

    a = np.zeros((64, 64, 3), np.uint8)
    write_dicom_wsi(tmp_path / "s", [a], tile=64)
    monkeypatch.setitem(sys.modules, "wsidicom", None)
    with pytest.raises(ValueError, match=r'needs wsidicom; install it with pip install "napari-muvit\[dicom\]"'):
        open_pyramid(tmp_path / "s")


def test_folder_of_other_dicom_is_one_sentence(tmp_path):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT image: not a slide
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", ds.file_meta.MediaStorageSOPInstanceUID
    (tmp_path / "ct").mkdir()
    ds.save_as(tmp_path / "ct" / "a.dcm", enforce_file_format=True)
    with pytest.raises(ValueError, match="could not be read as a DICOM whole-slide image"):
        open_pyramid(tmp_path / "ct")


def test_napari_reader_opens_a_dicom_folder(tmp_path):
    from napari_muvit.widgets._reader import get_reader

    a = np.random.default_rng(2).integers(0, 255, (128, 192, 3), dtype=np.uint8)
    write_dicom_wsi(tmp_path / "slide", [a, a[::2, ::2]], tile=64, mpp=0.5)
    reader = get_reader(str(tmp_path / "slide"))
    assert reader is not None and get_reader(str(tmp_path)) is None  # the parent holds no DICOM file itself
    ((data, meta, kind),) = reader(str(tmp_path / "slide"))
    assert kind == "image" and meta["rgb"] and meta["scale"] == (0.5, 0.5)
    assert [tuple(d.shape) for d in data] == [(128, 192, 3), (64, 96, 3)]
    np.testing.assert_array_equal(np.asarray(data[1][10:20, 30:40]), a[::2, ::2][10:20, 30:40])


def test_opening_reads_no_pixels_and_a_crop_reads_its_blocks_only(tmp_path, monkeypatch):
    import wsidicom

    a = np.random.default_rng(4).integers(0, 255, (1100, 1100, 3), dtype=np.uint8)
    write_dicom_wsi(tmp_path / "s", [a, a[::2, ::2]], tile=256)
    calls: list = []
    real = wsidicom.WsiDicom.read_region
    monkeypatch.setattr(wsidicom.WsiDicom, "read_region",
                        lambda self, loc, level, size, **kw: calls.append((loc, level, size))
                        or real(self, loc, level, size, **kw))
    pyr = open_pyramid(tmp_path / "s")
    assert calls == []
    img, _ = pyr.crops((700, 300), (1,), 32)
    np.testing.assert_array_equal(img[0], np.moveaxis(a[685:717, 285:317], 2, 0))
    assert calls == [((0, 512), 0, (512, 512))]  # blocks of 2 x 2 tiles: the one holding the window
