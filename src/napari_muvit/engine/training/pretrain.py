"""Multi-resolution MAE pre-training on one or more slides (plain torch loop, exactly resumable).

Output folder ``out`` = a napari-muvit model folder (``config.yaml`` + ``model.pth`` of the MAE, readable
by the reference package, + ``muvit.yaml``) and ``out/training/`` with ``checkpoint.pt``,
``history.csv``, ``loss.png`` and ``previews/step_XXXXXX.png``.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..device import device_policy
from .augment import Augmenter
from .batches import Prefetcher, SlideBatches, open_slides
from .recipe import DEFAULT_SIZE, PRETRAIN_LEVELS, RECIPE_NAME, TrainRecipe
from .runtime import check_cancel
from .schedule import make_optimizer, make_scheduler
from .state import (
    History,
    capture_rng,
    drop_aside,
    load_checkpoint,
    prepare_output,
    publish_model,
    restore_training,
    save_checkpoint,
    set_aside,
)

# A small default MAE: trains on a laptop CPU; pass model_config to change it.
DEFAULT_MAE = dict(patch_size=16, dim=256, num_layers=6, heads=4, num_layers_decoder=2, dim_decoder=128,
                   masking_ratio=0.75)


@dataclass
class TrainResult:
    """What a training run produced: the model folder, its history rows and whether it finished."""

    model_dir: Path
    history: list[dict] = field(default_factory=list)
    steps_done: int = 0
    total_steps: int = 0
    cancelled: bool = False
    metrics: dict = field(default_factory=dict)


def _normalizers(pyramids, normalization):
    from napari_muvit.data import Normalizer

    if normalization in (None, "percentile"):
        return [Normalizer.from_pyramid(p) for p in pyramids]
    if isinstance(normalization, dict):
        return [Normalizer.from_dict(normalization) for _ in pyramids]
    if isinstance(normalization, str):
        return [Normalizer(policy=normalization) for _ in pyramids]
    return [normalization for _ in pyramids]


def _mae_from(config: dict, base):
    from napari_muvit.model import MuViTMAE, load_model

    if base is None:
        return MuViTMAE(**config)
    loaded = load_model(base)
    if not isinstance(loaded, MuViTMAE):
        raise ValueError(f"{base} is not an MAE model folder; pre-training continues only from an MAE checkpoint.")
    return loaded


def pretrain(
    sources,
    out,
    recipe: TrainRecipe | None = None,
    *,
    base=None,
    resume: bool = False,
    overwrite: bool = False,
    progress=None,
    cancel=None,
    on_record=None,
) -> TrainResult:
    """Pre-train a MuViT MAE on random nested crops inside the slides' foreground, as ``recipe`` (a
    `TrainRecipe` with task ``mae``; default: ``TrainRecipe(task="mae")``) says.

    sources: one or more slides (paths, arrays, napari multiscale data or Pyramids). A napari multiscale
        layer's data (a list of arrays) is one slide: wrap it, ``[data]``.
    recipe.levels / size: MuViT levels (downsample factors; default (1, 8, 32), or the base model's) and crop
        side in pixels (default 256).
    recipe.steps or epochs: run length; an epoch = one pass over the foreground area in level-1 crops.
    recipe.model_config: MuViTMAE keyword arguments (defaults: :data:`DEFAULT_MAE`); ``base``: an MAE folder
        to continue from instead.
    resume: continue exactly from ``out/training/checkpoint.pt`` (model, optimiser, scheduler, RNGs,
        sampler state, history; the checkpoint's levels, size, batch size, seed and schedule win over the
        recipe's).
    progress(done, total): called after each step; cancel() -> True stops after the current step and
        writes a checkpoint plus the model folder.
    on_record(record): called after each step with that step's history row (``step``, ``loss``, ``lr``,
        ``grad_norm``, ``seconds``) on the calling thread, e.g. for a live loss plot.
    The resolved recipe is written to ``out/training/recipe.yaml``.
    """
    from napari_muvit.model import ModelCard

    recipe = TrainRecipe(task="mae") if recipe is None else recipe
    if not recipe.is_pretraining:
        raise ValueError(f"the recipe's task {recipe.task!r} is fine-tuning; pre-training needs task 'mae'.")
    levels, size, steps, epochs = recipe.levels, recipe.size or DEFAULT_SIZE, recipe.steps, recipe.epochs
    batch_size, seed, checkpoint_every = recipe.batch_size, recipe.seed, recipe.checkpoint_every
    policy = device_policy(recipe.device, recipe.precision, recipe.threads)
    out, train_dir, ckpt_path = prepare_output(out, resume, overwrite)
    dev = policy.device

    ckpt = load_checkpoint(ckpt_path) if resume else None
    if ckpt is not None:
        run = dict(ckpt["run"])
        levels, size, batch_size, seed = tuple(run["levels"]), run["size"], run["batch_size"], run["seed"]
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["model_config"].items()}
    else:
        config = {**DEFAULT_MAE, **recipe.model_config}
        config["levels"] = tuple(int(v) for v in (levels or PRETRAIN_LEVELS))
    pyramids = open_slides(sources)
    config["in_channels"] = pyramids[0].n_channels
    torch.manual_seed(seed)
    mae = _mae_from(config, None if ckpt is not None else base)
    if base is not None and ckpt is None:
        config = dict(mae.config) if hasattr(mae, "config") else config
        if levels is not None and tuple(int(v) for v in levels) != tuple(mae.encoder.levels):
            raise ValueError(
                f"levels {tuple(levels)} differ from the base model's levels {tuple(mae.encoder.levels)}; "
                "leave --levels out to continue with the base model's levels."
            )
    levels = tuple(mae.encoder.levels)
    normalizers = _normalizers(pyramids, recipe.normalization)
    data = SlideBatches(pyramids, levels, size, seed=seed, normalizers=normalizers,
                        augment=Augmenter(flips=recipe.dihedral, rotations=recipe.dihedral, jitter=0.1) if recipe.augment else None,
                        shift=recipe.nested_shift,
                        patch_size=mae.encoder.patch_size[0])
    aside = set_aside(train_dir, overwrite, resume)  # every input is checked: move the old run aside

    if ckpt is None:
        if steps is None:
            per_epoch = max(1, math.ceil(data.foreground_px / (size * levels[0]) ** 2 / batch_size))
            steps = int(math.ceil((epochs or 1) * per_epoch))
        total = int(steps)
        warmup_steps = recipe.warmup_steps
        run = dict(levels=list(levels), size=int(size), batch_size=int(batch_size), seed=int(seed),
                   total_steps=total, lr=recipe.learning_rate, weight_decay=recipe.weight_decay,
                   warmup_steps=int(warmup_steps if warmup_steps is not None else min(500, max(1, total // 10))),
                   clip_grad=recipe.clip_grad, nested_shift=recipe.nested_shift, augment=recipe.augment,
                   sources=[str(getattr(p, "name", "slide")) for p in pyramids])
    total = int(run["total_steps"])
    mae.to(dev).train()
    opt = make_optimizer(mae.parameters(), lr=run["lr"], weight_decay=run["weight_decay"])
    sched = make_scheduler(opt, total, run["warmup_steps"])
    scaler = policy.grad_scaler()
    history = History()
    start = 0
    if ckpt is not None:
        history = restore_training(ckpt, mae, opt, sched, data.rng)
        if "scaler" in ckpt and scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])
        start = int(ckpt["step"])
    recipe.replace(levels=levels, size=int(run["size"]), batch_size=int(run["batch_size"]), seed=int(run["seed"]),
                   steps=total, epochs=None, lr=run["lr"], weight_decay=run["weight_decay"],
                   warmup_steps=run["warmup_steps"], clip_grad=run["clip_grad"], nested_shift=run["nested_shift"],
                   augment=run["augment"]).save(_recipe_path(train_dir))

    # a fixed preview batch drawn from its own generator: previews never change the training stream
    preview_every = recipe.preview_every if recipe.preview_every is not None else checkpoint_every
    preview_data = SlideBatches(pyramids, levels, size, seed=seed + 7919, normalizers=normalizers,
                                areas=data.areas, augment=None)
    preview_img, preview_box = (torch.from_numpy(a).to(dev) for a in preview_data.next(min(2, batch_size)))

    def checkpoint(step: int, sampler_state: dict):
        amp = {"scaler": scaler.state_dict()} if scaler.is_enabled() else {}
        save_checkpoint(ckpt_path, model=mae.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                        rng=capture_rng(sampler_state=sampler_state), history=history.rows, step=step, run=run,
                        model_config=_plain(config), **amp)
        history.write_csv(train_dir / "history.csv")
        history.plot(train_dir / "loss.png", ys=("loss",), title="MAE reconstruction loss")

    cancelled = False
    step = start
    t0 = time.perf_counter()
    sampler_state = copy.deepcopy(data.rng.bit_generator.state)
    prefetch = Prefetcher(lambda: data.next(run["batch_size"]), data.rng)
    try:
        while step < total:
            if check_cancel(cancel):
                cancelled = True
                break
            (img, bbox), sampler_state = prefetch.get()
            step = _train_step(mae, opt, sched, scaler, img, bbox, policy, run, history, step, t0)
            if progress is not None:
                progress(step, total)
            if on_record is not None:
                on_record(dict(history.rows[-1]))
            if step % checkpoint_every == 0 or step == total:
                checkpoint(step, sampler_state)
            if preview_every and (step % preview_every == 0 or step == total):
                from .previews import save_preview

                save_preview(mae, preview_img, preview_box, train_dir / "previews" / f"step_{step:06d}.png",
                             title=f"step {step}")
    finally:
        prefetch.close()
    if cancelled:
        checkpoint(step, sampler_state)

    losses = history.column("loss")
    tail = losses[-max(1, min(50, len(losses) // 5)):] if len(losses) else np.array([np.nan])
    card = ModelCard(
        task="mae", levels=list(levels), crop_size=int(size), in_channels=int(config["in_channels"]),
        normalization=normalizers[0].to_dict() if hasattr(normalizers[0], "to_dict") else {},
        pixel_size=list(pyramids[0].pixel_size) if pyramids[0].pixel_size else None,
        provenance=dict(kind="mr-mae pre-training", steps=step, total_steps=total, batch_size=run["batch_size"],
                        seed=run["seed"], lr=run["lr"], sources=run["sources"],
                        final_loss=float(np.mean(tail)), device=dev.type),
    )
    mae.cpu().eval()
    publish_model(mae, out, card)
    drop_aside(aside)
    mae.to(dev)
    return TrainResult(model_dir=out, history=history.rows, steps_done=step, total_steps=total,
                       cancelled=cancelled, metrics={"final_loss": float(np.mean(tail))})


def _train_step(mae, opt, sched, scaler, img, bbox, policy, run, history, step, t0) -> int:
    """One optimisation step on a batch; appends a history row and returns the new step count.

    ``scaler``: the policy's loss scaler (fp16 only; otherwise it passes everything through unchanged).
    """
    dev = policy.device
    x = torch.from_numpy(img).to(dev, non_blocking=True)
    b = torch.from_numpy(bbox).to(dev, non_blocking=True)
    with policy.autocast():
        loss = mae(x, b, mask_indices=_cpu_masking(mae, x) if dev.type == "mps" else None)["loss"]
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)  # clip the true gradients
    grad_norm = torch.nn.utils.clip_grad_norm_(mae.parameters(), run["clip_grad"])
    scaler.step(opt)
    scaler.update()
    sched.step()
    step += 1
    history.append(step=step, loss=float(loss.detach()), lr=opt.param_groups[0]["lr"],
                   grad_norm=float(grad_norm), seconds=round(time.perf_counter() - t0, 3))
    return step


def _recipe_path(train_dir: Path) -> Path:
    train_dir.mkdir(parents=True, exist_ok=True)
    return train_dir / RECIPE_NAME


def _cpu_masking(mae, x: torch.Tensor) -> torch.Tensor:
    """Masking permutation drawn on the CPU (Apple MPS has no Dirichlet sampler), moved to ``x``'s device."""
    from napari_muvit.model.masking import sample_masking

    L = len(mae.encoder.levels)
    n = math.prod(s // p for s, p in zip(x.shape[3:], mae.encoder.patch_size))
    idx, _ = sample_masking(x.shape[0], L, n, mae.masking_ratio, mae.masking_mode, device="cpu")
    return idx.to(x.device)


def _plain(config: dict) -> dict:
    """Config with tuples as lists (safe in a weights-only checkpoint)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
