"""Missing source chunks (counted and reported, or refused up front with --strict); training --overwrite
keeps the earlier run until every input is checked; label files that are pickles or truncated."""

from pathlib import Path

import numpy as np
import pytest

from napari_muvit.cli import main
from napari_muvit.engine.testing import tiny_segmenter


@pytest.fixture(scope="module")
def holed(tmp_path_factory):
    """A synthetic OME-Zarr slide with one level-0 chunk deleted, and a tiny model."""
    from napari_muvit.data.synthetic import write_synthetic_slide
    from napari_muvit.model import save_model

    root = tmp_path_factory.mktemp("holed")
    write_synthetic_slide(root / "slide.zarr", 512, seed=1, chunk=256)
    chunk = root / "slide.zarr" / "s0" / "c" / "1" / "1"
    assert chunk.is_file()
    chunk.unlink()
    save_model(tiny_segmenter(), root / "model")
    return root


def _predict(root, out, *extra):
    return main(["predict", str(root / "slide.zarr"), "--model", str(root / "model"), "--region", "0:512,0:512",
                 "--out", str(out), "--quiet", *extra])


def test_missing_chunks_are_counted_and_reported(holed, capsys):
    rc = _predict(holed, holed / "lenient.zarr")
    err = capsys.readouterr().err
    assert rc == 0
    warnings = [line for line in err.splitlines() if line.startswith("napari-muvit: warning:")]
    assert warnings == ["napari-muvit: warning: 1 source chunk of 'slide' was missing and read as fill value "
                        "(zeros)."], err


def test_strict_refuses_before_any_output(holed, capsys):
    out = holed / "strict.zarr"
    rc = _predict(holed, out, "--strict")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "chunk (1, 1)" in err[0] and "missing from the store" in err[0], err
    assert not out.exists()


def test_strict_accepts_a_whole_slide(tmp_path, capsys):
    from napari_muvit.data.synthetic import write_synthetic_slide
    from napari_muvit.model import save_model

    write_synthetic_slide(tmp_path / "slide.zarr", 512, seed=1, chunk=256)
    save_model(tiny_segmenter(), tmp_path / "model")
    assert _predict(tmp_path, tmp_path / "out.zarr", "--strict") == 0
    assert "warning" not in capsys.readouterr().err


def _tiny_mae_folder(root: Path) -> Path:
    from napari_muvit.engine.training import TrainRecipe, pretrain

    img = (np.random.default_rng(0).random((256, 256)) * 255).astype(np.uint8)
    out = root / "mae"
    pretrain([img], out, TrainRecipe(
        task="mae", levels=(1, 4), size=32, steps=2, batch_size=2, checkpoint_every=2, preview_every=0, seed=0,
        model_config=dict(patch_size=8, dim=48, num_layers=1, heads=2, num_layers_decoder=1, dim_decoder=48)))
    return out


def test_overwrite_keeps_the_earlier_training_until_inputs_are_checked(tmp_path):
    from napari_muvit.engine.training import TrainRecipe, pretrain

    out = _tiny_mae_folder(tmp_path)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    history = (out / "training" / "history.csv").read_bytes()
    assert (out / "training" / "checkpoint.pt").is_file()
    with pytest.raises((ValueError, FileNotFoundError)):
        pretrain([str(tmp_path / "no-such-slide.zarr")], out,
                 TrainRecipe(task="mae", levels=(1, 4), size=32, steps=2, batch_size=2), overwrite=True)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing removed or added
    assert (out / "training" / "history.csv").read_bytes() == history
    # a run that succeeds replaces it, and leaves no set-aside copy behind
    img = (np.random.default_rng(1).random((256, 256)) * 255).astype(np.uint8)
    pretrain([img], out, TrainRecipe(
        task="mae", levels=(1, 4), size=32, steps=3, batch_size=2, checkpoint_every=3, preview_every=0, seed=0,
        model_config=dict(patch_size=8, dim=48, num_layers=1, heads=2, num_layers_decoder=1, dim_decoder=48)),
        overwrite=True)
    assert not list(out.glob(".training-replaced-*"))
    assert (out / "training" / "history.csv").read_text().count("\n") == 4  # header + 3 steps


def test_label_files_that_are_pickles_or_truncated_are_one_sentence(tmp_path):
    from napari_muvit.engine.training.annotations import read_label_file

    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"pickled\.npy' holds Python objects \(a pickle\)"):
        read_label_file(tmp_path / "pickled.npy")
    (tmp_path / "cut.npy").write_bytes(b"\x93NUMPY\x01\x00")
    with pytest.raises(ValueError, match=r"cut\.npy' is truncated or not a \.npy array"):
        read_label_file(tmp_path / "cut.npy")
