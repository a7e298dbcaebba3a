"""MR-MAE pre-training: the loss falls, a resumed run continues exactly, checkpoints load, CLI errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from napari_muvit.data import synthetic_slide
from napari_muvit.engine.training import TrainRecipe, pretrain
from napari_muvit.engine.training.state import History, load_checkpoint

TINY = dict(patch_size=8, dim=48, num_layers=2, heads=2, dim_decoder=48, num_layers_decoder=1)


@pytest.fixture(scope="module")
def slide():
    image, labels, names = synthetic_slide(768, seed=3)
    return image


RUN_ARGS = ("base", "resume", "overwrite", "progress", "cancel", "on_record")


def _run(slide, out, **kw):
    """A tiny pre-training run; ``kw`` holds recipe fields and `pretrain`'s own arguments."""
    args = dict(task="mae", levels=(1, 4), size=32, batch_size=4, model_config=TINY, lr=1e-3, warmup_steps=3,
                checkpoint_every=3, preview_every=0, seed=5, device="cpu")
    args.update({k: v for k, v in kw.items() if k not in RUN_ARGS})
    return pretrain([slide], out, TrainRecipe(**args), **{k: v for k, v in kw.items() if k in RUN_ARGS})


def test_mae_loss_falls_and_outputs_are_written(slide, tmp_path):
    result = _run(slide, tmp_path / "mae", steps=40, preview_every=40)
    losses = np.array([r["loss"] for r in result.history])
    assert len(losses) == 40 and result.steps_done == 40 and not result.cancelled
    assert losses[-10:].mean() < 0.6 * losses[:5].mean(), losses
    files = {p.name for p in (tmp_path / "mae").iterdir()}
    assert {"config.yaml", "model.pth", "muvit.yaml", "training"} <= files
    train = tmp_path / "mae" / "training"
    assert len(History.read_csv(train / "history.csv").rows) == 40
    assert (train / "loss.png").stat().st_size > 1000
    assert (train / "previews" / "step_000040.png").read_bytes()[:4] == b"\x89PNG"
    card = yaml.safe_load((tmp_path / "mae" / "muvit.yaml").read_text())
    assert card["task"] == "mae" and card["levels"] == [1, 4] and card["crop_size"] == 32
    assert card["normalization"]["policy"] == "percentile"


def test_resume_reproduces_the_uninterrupted_run(slide, tmp_path):
    full = _run(slide, tmp_path / "full", steps=6)
    stop_after = {"n": 0}

    def cancel():
        return stop_after["n"] >= 3

    def progress(done, total):
        stop_after["n"] = done

    part = _run(slide, tmp_path / "part", steps=6, cancel=cancel, progress=progress)
    assert part.cancelled and part.steps_done == 3
    assert load_checkpoint(tmp_path / "part" / "training" / "checkpoint.pt")["step"] == 3
    resumed = _run(slide, tmp_path / "part", steps=6, resume=True)
    assert resumed.steps_done == 6
    full_losses = [r["loss"] for r in full.history]
    resumed_losses = [r["loss"] for r in resumed.history]
    assert resumed_losses[:3] == pytest.approx(full_losses[:3], abs=0)  # history carried over
    assert resumed_losses[3] == pytest.approx(full_losses[3], rel=1e-6)  # the next step after resume
    assert resumed_losses[3:] == pytest.approx(full_losses[3:], rel=1e-5)
    a = torch.load(tmp_path / "full" / "model.pth", weights_only=True)
    b = torch.load(tmp_path / "part" / "model.pth", weights_only=True)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


def test_checkpoint_loads_in_ours(slide, tmp_path):
    from napari_muvit.model import load_model
    from napari_muvit.model.mae import MuViTMAE

    _run(slide, tmp_path / "m", steps=2)
    model = load_model(tmp_path / "m")
    assert isinstance(model, MuViTMAE) and model.encoder.levels == (1, 4) and model.encoder.dim == 48
    state = torch.load(tmp_path / "m" / "model.pth", weights_only=True)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    x = torch.zeros(1, 2, 1, 32, 32)
    assert model.encoder(x).shape == (1, 2 * 16, 48)
    # continuing from it keeps its levels; asking for other levels is refused
    more = _run(slide, tmp_path / "more", steps=1, base=tmp_path / "m", levels=None)
    assert load_model(more.model_dir).encoder.levels == (1, 4)
    with pytest.raises(ValueError, match="differ from the base model's levels"):
        _run(slide, tmp_path / "other", steps=1, base=tmp_path / "m", levels=(1, 8))


def test_checkpoint_loads_in_the_reference_package(slide, tmp_path):
    muvit = pytest.importorskip("muvit")
    _run(slide, tmp_path / "m", steps=2)
    ref = muvit.MuViTMAE2d.from_folder(tmp_path / "m")
    ours = torch.load(tmp_path / "m" / "model.pth", weights_only=True)
    assert set(ref.state_dict()) == set(ours)


def test_existing_output_needs_resume_or_overwrite(slide, tmp_path):
    _run(slide, tmp_path / "m", steps=1)
    with pytest.raises(FileExistsError, match="--resume"):
        _run(slide, tmp_path / "m", steps=1)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        _run(slide, tmp_path / "other", steps=1, resume=True)


def test_cli_pretrain_runs_and_rejects_bad_levels(slide, tmp_path, capsys):
    import tifffile

    from napari_muvit.cli import main

    tifffile.imwrite(tmp_path / "s.tif", slide[:512, :512])
    out = tmp_path / "cli"
    code = main(["pretrain", str(tmp_path / "s.tif"), "--levels", "1,4", "--size", "32", "--steps", "2",
                 "--batch-size", "2", "--patch-size", "8", "--dim", "48", "--layers", "1", "--heads", "2",
                 "--out", str(out), "--quiet", "--device", "cpu"])
    assert code == 0 and (out / "model.pth").is_file()
    assert '"steps": 2' in capsys.readouterr().out
    for levels, message in [("1,3,8", "not nested"), ("1,128", "too coarse"), ("1,x", "comma-separated")]:
        code = main(["pretrain", str(tmp_path / "s.tif"), "--levels", levels, "--size", "32", "--steps", "1",
                     "--patch-size", "8", "--dim", "48", "--heads", "2", "--out", str(tmp_path / levels)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_cpu_masking_used_on_mps_is_a_valid_permutation():
    from napari_muvit.engine.training.pretrain import _cpu_masking
    from napari_muvit.model.mae import MuViTMAE

    torch.manual_seed(0)
    mae = MuViTMAE(levels=(1, 4), **TINY)
    x = torch.randn(3, 2, 1, 32, 32)
    idx = _cpu_masking(mae, x)
    assert idx.shape == (3, 32) and idx.device == x.device
    assert all(sorted(row.tolist()) == list(range(32)) for row in idx)
    out = mae(x, None, mask_indices=idx)
    assert out["mask"].sum(1).tolist() == [32 - int(32 * 0.25)] * 3  # 75 % masked in every sample
    assert torch.isfinite(out["loss"])


def test_epochs_count_level1_crops_of_the_foreground(slide, tmp_path):
    from napari_muvit.data import foreground_mask, open_pyramid

    mask, level = foreground_mask(open_pyramid(slide))
    per_epoch = int(np.ceil(mask.sum() * level**2 / 32**2 / 4))  # foreground px / crop px / batch
    result = _run(slide, tmp_path / "e", steps=None, epochs=2 / per_epoch)
    assert result.total_steps == 2 and result.steps_done == 2
