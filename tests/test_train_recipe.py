"""`TrainRecipe` (round trip, defaults, one-sentence refusals), the one device policy with a faked machine,
`on_record`, CLI `--recipe` precedence, and histories identical to the keyword API the recipe replaced."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from napari_muvit.engine import device as device_mod
from napari_muvit.engine.training import TrainRecipe, finetune, pretrain
from napari_muvit.model import ModelCard, save_model
from napari_muvit.model.mae import MuViTMAE

TINY = dict(patch_size=8, dim=48, num_layers=2, heads=2, dim_decoder=48, num_layers_decoder=1)


# ---------------------------------------------------------------------------------------------- recipe
def _rich_finetune() -> TrainRecipe:
    return TrainRecipe(task="classification", levels="1,8", size=64, epochs=3, steps_per_epoch=7, batch_size=4,
                       lr=2e-3, encoder_lr=1e-4, weight_decay=0.01, warmup_steps=5, clip_grad=0.5, head="probe",
                       train_encoder=True, class_names=["tumour", "stroma"], class_colors=["#ff0000", "#00ff00"],
                       class_weights=[1, 2.5], val_fraction=0.1, normalization={"policy": "none"}, augment=False,
                       seed=4, device="cpu", precision="fp32", threads=2)


def _rich_pretrain() -> TrainRecipe:
    return TrainRecipe(task="mae", levels=(1, 4, 16), size=128, epochs=0.5, batch_size=16, lr=1e-3,
                       warmup_steps=0, nested_shift=0.5, model_config={"dim": 64, "heads": 2}, checkpoint_every=50,
                       preview_every=0, seed=9, device="auto", precision="bf16")


@pytest.mark.parametrize("make", [_rich_finetune, _rich_pretrain, TrainRecipe, lambda: TrainRecipe(task="mae")])
def test_recipe_round_trips_through_yaml_json_and_files(make, tmp_path):
    recipe = make()
    assert TrainRecipe.from_yaml(recipe.to_yaml()) == recipe
    assert TrainRecipe.from_json(recipe.to_json()) == recipe
    assert TrainRecipe.load(recipe.save(tmp_path / "r.yaml")) == recipe
    assert TrainRecipe.load(recipe.save(tmp_path / "r.json")) == recipe
    # a file holds only the fields its kind of run reads
    keys = set(recipe.to_dict())
    assert ("steps" in keys) == recipe.is_pretraining and ("val_fraction" in keys) == (not recipe.is_pretraining)


def test_recipe_normalises_values_and_keeps_todays_defaults():
    r = _rich_finetune()
    assert r.levels == (1, 8) and r.class_weights == [1.0, 2.5] and isinstance(r.epochs, int)
    ft, mae = TrainRecipe(), TrainRecipe(task="mae")
    # the defaults of finetune(...) and pretrain(...) before they took a recipe
    assert (ft.task, ft.batch_size, ft.weight_decay, ft.clip_grad, ft.val_fraction, ft.head) == (
        "segmentation", 8, 0.05, 1.0, 0.2, "unetr")
    assert ft.learning_rate == 1e-3 and ft.finetune_epochs == 10 and ft.size is None and ft.levels is None
    assert mae.learning_rate == 1.5e-4 and mae.checkpoint_every == 200 and mae.nested_shift == 1.0
    assert (ft.seed, ft.device, ft.precision, ft.threads, ft.augment) == (0, "auto", "auto", None, True)


BAD = [
    (dict(task="mse"), "task 'mse'"),
    (dict(levels="1,3,8"), "not nested"),
    (dict(size=0), "crop size 0"),
    (dict(epochs=0), "epochs 0"),
    (dict(epochs=1.5), "epochs 1.5"),
    (dict(task="mae", epochs=-1), "epochs -1"),
    (dict(task="mae", steps=0), "steps 0"),
    (dict(task="mae", steps=5, epochs=1), "steps 5 and epochs 1"),
    (dict(steps_per_epoch=0), "steps per epoch 0"),
    (dict(batch_size=0), "batch size 0"),
    (dict(batch_size="eight"), "batch size 'eight'"),
    (dict(lr=0), "lr 0"),
    (dict(encoder_lr=-1e-3), "encoder lr -0.001"),
    (dict(weight_decay=-0.1), "weight decay -0.1"),
    (dict(warmup_steps=-1), "warmup steps -1"),
    (dict(clip_grad=0), "clip grad 0"),
    (dict(head="mlp"), "head 'mlp'"),
    (dict(train_encoder="yes"), "train_encoder 'yes'"),
    (dict(class_names=[]), "class names []"),
    (dict(class_weights="inverse"), "class weights 'inverse'"),
    (dict(class_weights=[1, -1]), "class weights [1, -1]"),
    (dict(val_fraction=1.0), "val fraction 1.0"),
    (dict(normalization="zscore"), "normalization 'zscore'"),
    (dict(task="mae", nested_shift=-1), "nested shift -1"),
    (dict(task="mae", model_config={"levels": [1, 4]}), "model config key 'levels'"),
    (dict(task="mae", model_config={"depth": 3}), "model config key 'depth'"),
    (dict(task="mae", checkpoint_every=0), "checkpoint every 0"),
    (dict(task="mae", preview_every=-1), "preview every -1"),
    (dict(seed=-1), "seed -1"),
    (dict(device="tpu"), "device 'tpu'"),
    (dict(precision="fp8"), "precision 'fp8'"),
    (dict(threads=0), "threads 0"),
    (dict(steps=10), "steps 10 applies to pre-training only"),
    (dict(task="mae", head="probe"), "head 'probe' applies to fine-tuning only"),
    (dict(task="mae", val_fraction=0.3), "val_fraction 0.3 applies to fine-tuning only"),
]


@pytest.mark.parametrize("fields, words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_every_bad_value_is_refused_with_one_sentence(fields, words):
    with pytest.raises(ValueError) as info:
        TrainRecipe(**fields)
    msg = str(info.value)
    assert words in msg and "\n" not in msg and msg.endswith("."), msg


def test_bad_recipe_files_are_one_sentence(tmp_path):
    with pytest.raises(ValueError, match="unknown training recipe key"):
        TrainRecipe.from_dict({"epoch": 3})
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        TrainRecipe.load(tmp_path / "list.yaml")
    (tmp_path / "broken.json").write_text("{epochs: ")
    with pytest.raises(ValueError, match="is not valid JSON"):
        TrainRecipe.load(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TrainRecipe.load(tmp_path / "missing.yaml")
    # a file without a task takes the one the caller names
    (tmp_path / "mae.yaml").write_text("steps: 5\n")
    assert TrainRecipe.load(tmp_path / "mae.yaml", task="mae").steps == 5


# ---------------------------------------------------------------------------------------------- device policy
@pytest.fixture
def fake_machine(monkeypatch):
    """Set what the capability probes report: ``fake_machine(cuda=, bf16=, mps=)``."""

    monkeypatch.delenv("NAPARI_MUVIT_THREADS", raising=False)

    def set_(cuda=False, bf16=False, mps=False):
        monkeypatch.setattr(device_mod, "cuda_available", lambda: cuda)
        monkeypatch.setattr(device_mod, "cuda_bf16_supported", lambda: bf16)
        monkeypatch.setattr(device_mod, "mps_available", lambda: mps)

    return set_


@pytest.mark.parametrize("machine, device, precision, want_device, want_dtype", [
    (dict(cuda=True, bf16=True), "auto", "auto", "cuda", torch.bfloat16),
    (dict(cuda=True, bf16=False), "auto", "auto", "cuda", torch.float16),  # the fp16 fallback
    (dict(cuda=True, bf16=False), "cuda", "fp32", "cuda", None),
    (dict(cuda=True, bf16=True), "cpu", "auto", "cpu", None),
    (dict(mps=True), "auto", "auto", "mps", None),
    (dict(), "auto", "auto", "cpu", None),
    (dict(), "cpu", "bf16", "cpu", torch.bfloat16),
])
def test_device_policy_picks_device_and_autocast_dtype(fake_machine, machine, device, precision, want_device,
                                                       want_dtype, torch_one_thread):
    fake_machine(**machine)
    policy = device_mod.device_policy(device, precision)
    assert policy.device.type == want_device and policy.dtype == want_dtype
    assert policy.precision == {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[want_dtype]
    assert policy.threads == 1  # torch's count is left as it is without a thread limit
    # the training loops' autocast follows the same decision
    from napari_muvit.engine.training.runtime import autocast

    with warnings.catch_warnings():  # a faked GPU: torch warns that it cannot autocast there
        warnings.simplefilter("ignore")
        ctx = autocast(policy.device, precision)
    assert getattr(ctx, "fast_dtype", None) == want_dtype


def test_device_policy_refusals_and_threads(fake_machine, monkeypatch, torch_one_thread):
    fake_machine()
    with pytest.raises(ValueError, match="no CUDA GPU"):
        device_mod.device_policy("cuda")
    with pytest.raises(ValueError, match="needs a GPU"):
        device_mod.device_policy("cpu", "fp16")
    assert device_mod.device_policy("cpu", threads=2).threads == 2 and torch.get_num_threads() == 2
    monkeypatch.setenv("NAPARI_MUVIT_THREADS", "1")
    assert device_mod.device_policy("cpu").threads == 1
    # loss scaling only for fp16; bf16 and fp32 pass the loss through unchanged
    for dtype in (None, torch.bfloat16):
        scaler = device_mod.grad_scaler(torch.device("cpu"), dtype)
        loss = torch.tensor(2.0)
        assert not scaler.is_enabled() and scaler.scale(loss) is loss


# ---------------------------------------------------------------------------------------------- training runs
@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """A 512 px slide of sine blobs, labels 1 = background / 2 = blob, and an untrained tiny MAE (1, 4)."""
    yy, xx = np.mgrid[:512, :512]
    inside = (np.sin(yy / 23.0) * np.cos(xx / 17.0)) > 0.3
    image = (inside * 120 + np.random.default_rng(7).integers(0, 60, (512, 512))).astype(np.uint8)
    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("base") / "mae"
    save_model(MuViTMAE(levels=(1, 4), **TINY), base, card=ModelCard(task="mae", levels=(1, 4), crop_size=32))
    return image, inside.astype(np.uint8) + 1, base


FT = dict(class_names=["background", "blob"], epochs=2, steps_per_epoch=3, batch_size=2, lr=3e-3, device="cpu", seed=1)
PRE = dict(task="mae", levels=(1, 4), size=32, batch_size=2, model_config=TINY, lr=1e-3, warmup_steps=2,
           checkpoint_every=3, preview_every=0, seed=5, device="cpu", steps=4)

# Recorded with the keyword API that TrainRecipe replaced (finetune(..., epochs=2, ...) with FT's values and
# pretrain(..., steps=4, ...) with PRE's), on the same inputs: the recipe path must give the same numbers.
OLD_FINETUNE = [
    {"epoch": 1, "step": 3, "train_loss": 0.5817519028981527, "lr": 0.001973890236646797,
     "val_loss": 0.38355362529938036, "mDSC": 0.9495268369456534, "accuracy": 0.9601111778846154,
     "dice_background": 0.9726401483924155, "dice_blob": 0.9264135254988913, "auc": 0.9947877635108652,
     "val_pixels": 53248},
    {"epoch": 2, "step": 6, "train_loss": 0.36233949661254883, "lr": 3e-05, "val_loss": 0.34587270537248027,
     "mDSC": 0.8685998808458675, "accuracy": 0.9039588341346154, "dice_background": 0.9367627055768517,
     "dice_blob": 0.8004370561148834, "auc": 0.9927975309716089, "val_pixels": 53248},
]
# Re-recorded when the foreground mask became sensitive to sparse cells: pre-training draws its crops inside
# that mask, so the sampled crops (and these losses) changed with it; the recipe path itself was unchanged.
OLD_PRETRAIN = [
    {"step": 1, "loss": 0.7625640034675598, "lr": 0.0006666666666666666, "grad_norm": 1.8311676979064941},
    {"step": 2, "loss": 0.6228152513504028, "lr": 0.001, "grad_norm": 1.5265699625015259},
    {"step": 3, "loss": 0.5691795349121094, "lr": 0.000505, "grad_norm": 1.4783340692520142},
    {"step": 4, "loss": 0.4749086797237396, "lr": 1e-05, "grad_norm": 1.248294711112976},
]


def _without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _same_rows(rows, expected):
    assert [sorted(r) for r in rows] == [sorted(r) for r in expected]
    for row, want in zip(rows, expected):
        for k, v in want.items():
            assert row[k] == pytest.approx(v, rel=1e-5, abs=1e-7), (k, row[k], v)


def test_finetune_by_recipe_matches_the_keyword_api_and_reports_each_epoch(blobs, tmp_path):
    image, labels, base = blobs
    records = []
    result = finetune(image, labels, base, tmp_path / "seg", TrainRecipe(**FT), on_record=records.append)
    _same_rows(_without_seconds(result.history), OLD_FINETUNE)
    assert records == result.history  # one record per logged epoch, the history row itself
    # the resolved recipe is stored with the run and reads back as the recipe that ran
    saved = TrainRecipe.load(tmp_path / "seg" / "training" / "recipe.yaml")
    assert saved == TrainRecipe(**{**FT, "levels": (1, 4), "size": 32, "warmup_steps": 1})


def test_pretrain_by_recipe_matches_the_keyword_api_and_reports_each_step(blobs, tmp_path):
    image, _, _ = blobs
    records = []
    result = pretrain([image], tmp_path / "pre", TrainRecipe(**PRE), on_record=records.append)
    _same_rows(_without_seconds(result.history), OLD_PRETRAIN)
    assert records == result.history and [r["step"] for r in records] == [1, 2, 3, 4]
    assert TrainRecipe.load(tmp_path / "pre" / "training" / "recipe.yaml") == TrainRecipe(**PRE)


def test_a_recipe_for_the_other_loop_is_refused(blobs, tmp_path):
    image, labels, base = blobs
    with pytest.raises(ValueError, match="pre-training needs task 'mae'"):
        pretrain([image], tmp_path / "p", TrainRecipe())
    with pytest.raises(ValueError, match="fine-tuning needs task"):
        finetune(image, labels, base, tmp_path / "f", TrainRecipe(task="mae"))
    with pytest.raises(ValueError, match="'fp16' needs a GPU"):  # training asks the device policy
        finetune(image, labels, base, tmp_path / "f", TrainRecipe(device="cpu", precision="fp16"))
    assert not (tmp_path / "f").exists()


# ---------------------------------------------------------------------------------------------- CLI
def _cli_args(argv):
    from napari_muvit.cli import build_parser

    return build_parser().parse_args(argv)


def test_cli_flags_override_the_recipe_file(tmp_path):
    from napari_muvit.cli._training_args import build_recipe

    path = TrainRecipe(epochs=4, steps_per_epoch=2, batch_size=2, lr=0.002, seed=3, val_fraction=0.1).save(
        tmp_path / "r.yaml")
    args = _cli_args(["finetune", "s.tif", "--labels", "l.npy", "--base", "b", "--out", "o", "--recipe", str(path),
                      "--batch-size", "5", "--epochs", "6", "--train-encoder"])
    recipe = build_recipe(args, "segmentation", {"epochs": args.epochs, "train_encoder": args.train_encoder})
    assert (recipe.batch_size, recipe.epochs, recipe.train_encoder) == (5, 6, True)  # flags win
    assert (recipe.steps_per_epoch, recipe.lr, recipe.seed, recipe.val_fraction) == (2, 0.002, 3, 0.1)  # file
    assert recipe.device == "auto" and recipe.head == "unetr"  # neither: defaults
    # pre-training: a --steps flag replaces the file's epochs (one run length)
    path = TrainRecipe(task="mae", epochs=2, size=64).save(tmp_path / "m.json")
    args = _cli_args(["pretrain", "s.tif", "--out", "o", "--recipe", str(path), "--steps", "7"])
    recipe = build_recipe(args, "mae", {"steps": args.steps, "epochs": args.epochs, "size": args.size})
    assert (recipe.task, recipe.steps, recipe.epochs, recipe.size) == ("mae", 7, None, 64)


def test_no_dihedral_keeps_every_crop_unturned_but_jittered():
    """``--no-dihedral`` (recipe ``dihedral: false``): the fine-tuning crops are never flipped or turned, for
    classes that name a direction; the default still turns them."""
    from napari_muvit.cli._training_args import build_recipe
    from napari_muvit.data import open_pyramid
    from napari_muvit.engine.training.finetune import make_task

    args = _cli_args(["finetune", "s.tif", "--labels", "l.npy", "--base", "b", "--out", "o", "--no-dihedral"])
    recipe = build_recipe(args, "segmentation", {"dihedral": args.dihedral})
    assert recipe.dihedral is False and recipe.augment is True
    assert TrainRecipe.from_dict(recipe.to_dict()).dihedral is False and TrainRecipe().dihedral is True
    img = np.random.default_rng(0).integers(0, 255, (128, 128)).astype(np.uint8)
    labels = np.ones((128, 128), np.uint8)
    labels[:, 64:] = 2  # class by side: a turn or a flip would move it
    pyramid = open_pyramid(img)
    for dihedral, turned in ((False, False), (True, True)):
        task = make_task("segmentation", pyramid, labels, (1, 4), 32, ["left", "right"], 0.0, 0, None, True,
                         dihedral=dihedral)
        seen = set()
        for _ in range(12):
            _, _, target = task.train_batch(4)
            for t in target:
                # an unturned crop has "left" (0) left of "right" (1) in every row, never the other way round
                seen.add(bool(((t[:, 0] == 1) & (t[:, -1] == 0)).any()))
        assert (True in seen) == turned


def test_cli_run_writes_its_recipe_and_repeating_it_gives_the_same_history(blobs, tmp_path, capsys):
    import tifffile

    from napari_muvit.cli import main
    from napari_muvit.engine.training.state import History

    image, labels, base = blobs
    tifffile.imwrite(tmp_path / "slide.tif", image)
    np.save(tmp_path / "labels.npy", labels)
    flags = ["--quiet", "--device", "cpu"]
    recipe = TrainRecipe(epochs=1, steps_per_epoch=2, batch_size=2, seed=3).save(tmp_path / "r.yaml")
    code = main(["finetune", str(tmp_path / "slide.tif"), "--labels", str(tmp_path / "labels.npy"), "--base",
                 str(base), "--out", str(tmp_path / "a"), "--recipe", str(recipe), "--lr", "0.004", *flags])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    used = TrainRecipe.load(out["recipe"])
    assert (used.epochs, used.steps_per_epoch, used.batch_size, used.seed, used.lr) == (1, 2, 2, 3, 0.004)
    assert out["steps"] == 2
    code = main(["finetune", str(tmp_path / "slide.tif"), "--labels", str(tmp_path / "labels.npy"), "--base",
                 str(base), "--out", str(tmp_path / "b"), "--recipe", out["recipe"], "--quiet"])
    assert code == 0
    a, b = (_without_seconds(History.read_csv(tmp_path / d / "training" / "history.csv").rows) for d in "ab")
    assert a == b and len(a) == 1
    # a bad value in the file is one line on stderr and status 2
    (tmp_path / "bad.yaml").write_text("epochs: 0\n")
    code = main(["finetune", str(tmp_path / "slide.tif"), "--labels", str(tmp_path / "labels.npy"), "--base",
                 str(base), "--out", str(tmp_path / "c"), "--recipe", str(tmp_path / "bad.yaml"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "epochs 0" in err, err


def test_the_recipe_files_shown_in_the_docs_load():
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    blocks = [b.split("```")[0] for name in ("cli.md", "models.md") for b in (docs / name).read_text().split("```yaml")[1:]]
    recipes = [TrainRecipe.from_yaml(b) for b in blocks]
    assert len(recipes) == 2 and [r.class_names for r in recipes] == [["tumour", "stroma"]] * 2
    assert (recipes[0].epochs, recipes[0].seed, recipes[1].steps_per_epoch) == (5, 3, 120)


def test_fp16_policy_trains_with_loss_scaling_and_checkpoints_the_scaler(blobs, tmp_path, monkeypatch):
    """The fp16 fallback (a GPU without bf16) runs the loss-scaled step; faked here with CPU fp16 autocast."""
    import importlib

    from napari_muvit.engine.device import DevicePolicy

    finetune_mod = importlib.import_module("napari_muvit.engine.training.finetune")
    pretrain_mod = importlib.import_module("napari_muvit.engine.training.pretrain")
    from napari_muvit.engine.training.state import load_checkpoint

    fp16 = DevicePolicy(torch.device("cpu"), torch.float16, torch.get_num_threads())
    assert fp16.grad_scaler().is_enabled() and fp16.precision == "fp16"
    monkeypatch.setattr(pretrain_mod, "device_policy", lambda *a: fp16)
    monkeypatch.setattr(finetune_mod, "device_policy", lambda *a: fp16)
    monkeypatch.setattr(finetune_mod, "evaluate", lambda *a, **k: {})  # validation is not what is tested here
    image, labels, base = blobs
    pre = pretrain([image], tmp_path / "pre", TrainRecipe(**{**PRE, "steps": 3}))
    assert len(pre.history) == 3 and all(np.isfinite(r["loss"]) for r in pre.history)
    scale = load_checkpoint(tmp_path / "pre" / "training" / "checkpoint.pt")["scaler"]["scale"]
    assert 0 < scale <= 65536.0  # the scaler's state (halved on any overflow) is kept for an exact resume
    ft = finetune(image, labels, base, tmp_path / "ft", TrainRecipe(**{**FT, "epochs": 1, "steps_per_epoch": 2}))
    assert ft.steps_done == 2 and np.isfinite(ft.history[0]["train_loss"])
    assert "scaler" in load_checkpoint(tmp_path / "ft" / "training" / "checkpoint.pt")
