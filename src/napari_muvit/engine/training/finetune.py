"""Fine-tuning: a segmentation head (optionally the encoder too) from a label image, or a tile classifier
from ROI annotations. Validation is on held-out *regions*; metrics per epoch go to the history.

Output folder ``out`` = napari-muvit model folder (``config.yaml`` + ``model.pth`` + ``muvit.yaml``) and
``out/training/`` with ``checkpoint.pt`` (resumable at epoch boundaries), ``history.csv``, ``metrics.png``.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...data.colors import CARD_PALETTE, pad_class_colors
from ..device import device_policy
from .annotations import IGNORE, open_label_image, read_rois
from .augment import Augmenter
from .batches import Prefetcher, check_levels_available, open_slides
from .metrics import ConfusionMatrix, multiclass_auc
from .pretrain import TrainResult, _normalizers
from .recipe import TrainRecipe
from .runtime import autocast, check_cancel
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

DEFAULT_COLORS = list(CARD_PALETTE)


def class_colors_for(class_colors, n: int) -> list[str]:
    """``class_colors`` padded to ``n`` with the card palette (cycled; `data.colors.pad_class_colors`)."""
    return pad_class_colors(class_colors, n)


def _load_base(base, device):
    from napari_muvit.model import load_model

    model = load_model(base, device="cpu")
    return model, model.encoder, getattr(model, "card", None)


def build_head_model(task: str, encoder, num_classes: int, head: str = "unetr", train_encoder: bool = False):
    from napari_muvit.model import MuViTClassifier, MuViTSegmenter

    if task == "segmentation":
        return MuViTSegmenter(encoder, num_classes, head=head, freeze_encoder=not train_encoder)
    return MuViTClassifier(encoder, num_classes, freeze_encoder=not train_encoder)


def make_task(task, pyramid, annotations, levels, size, class_names, val_fraction, seed, normalizer, augment,
              background_class=None, dihedral: bool = True):
    from .tasks import ClassificationTask, SegmentationTask

    aug = Augmenter(flips=dihedral, rotations=dihedral, jitter=0.1) if augment else None
    if task == "segmentation":
        if isinstance(annotations, (str, Path)) and str(annotations).lower().endswith((".geojson", ".json")):
            # QuPath annotations: their classes become the labels
            from napari_muvit.data.qupath import annotation_labels

            annotations, class_names = annotation_labels(annotations, pyramid.shape, class_names)
        from napari_muvit.data.label_store import stored_class_names

        # names from the label store's image-label properties; refuses 0-background synthetic stores (v1-2)
        class_names = stored_class_names(annotations, class_names, background_class)
        labels = open_label_image(annotations, pyramid.shape[-2:])
        if background_class:  # a foreign dense label image whose 0 is a class: shift every value up by one
            labels = labels.astype(np.int32) + 1
            if class_names is not None:
                class_names = [background_class, *class_names]
        data = SegmentationTask(pyramid, labels, levels, size, class_names, val_fraction, seed, normalizer, aug)
        if background_class and class_names is None:
            data.class_names[0] = background_class
        return data
    if task == "classification":
        rois = annotations if isinstance(annotations, list) else read_rois(annotations)
        return ClassificationTask(pyramid, rois, levels, size, class_names, val_fraction, seed, normalizer, aug)
    raise ValueError(f"task {task!r} is not supported; use 'segmentation' or 'classification'.")


@torch.no_grad()
def evaluate(model, data, batch_size: int, device, precision="auto", max_auc_samples: int = 20000, seed: int = 0):
    """Validation metrics: loss, Dice per class, mDSC, accuracy and one-vs-rest AUC (``dict``)."""
    was = model.training
    model.eval()
    cm = ConfusionMatrix(data.num_classes, IGNORE)
    losses, probs, truths = [], [], []
    for img, bbox, target in data.val_batches(batch_size):
        x, b = torch.from_numpy(img).to(device), torch.from_numpy(bbox).to(device)
        with autocast(device, precision):
            logits = model(x, b)
        logits = logits.float().cpu()
        t = torch.from_numpy(target)
        if (t != IGNORE).any():
            losses.append(float(F.cross_entropy(logits, t, ignore_index=IGNORE, reduction="sum")))
        cm.update(target, logits.argmax(1).numpy())
        p = logits.softmax(1)
        if p.ndim == 4:  # (B, K, H, W) -> labelled pixels only
            p = p.permute(0, 2, 3, 1).reshape(-1, p.shape[1])
            t = t.reshape(-1)
        keep = t != IGNORE
        probs.append(p[keep].numpy())
        truths.append(t[keep].numpy())
    model.train(was)
    n = int(cm.matrix.sum())
    out = {"val_loss": sum(losses) / n if n else float("nan"), "mDSC": cm.mean_dice(), "accuracy": cm.accuracy()}
    for name, d in zip(data.class_names, cm.dice()):
        out[f"dice_{name}"] = float(d)
    if probs:
        p, t = np.concatenate(probs), np.concatenate(truths)
        if len(t) > max_auc_samples:  # AUC on a fixed random subset of pixels keeps epochs fast
            idx = np.random.default_rng(seed).choice(len(t), max_auc_samples, replace=False)
            p, t = p[idx], t[idx]
        out["auc"] = multiclass_auc(t, p)
    out["val_pixels" if getattr(data, "kind", "") == "segmentation" else "val_samples"] = n
    return out


def finetune(
    source,
    annotations,
    base,
    out,
    recipe: TrainRecipe | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress=None,
    cancel=None,
    on_record=None,
) -> TrainResult:
    """Fine-tune on one slide, as ``recipe`` (a `TrainRecipe` with task ``segmentation`` or
    ``classification``; default: ``TrainRecipe()``) says.

    source: the slide. annotations: a label image (array, napari Labels data or file; 0 = unlabelled)
        for ``task="segmentation"``, or ROIs (GeoJSON/CSV path or ``list[ROI]``) for "classification".
    base: a model folder (MAE, encoder or an earlier fine-tuned model); its encoder is reused and its levels
        and crop size are the defaults.
    recipe.train_encoder: also update the encoder (at ``encoder_lr``, default ``lr/10``); otherwise it is frozen.
    recipe.background_class: only for a foreign dense label image whose 0 is a real class (e.g. a mask from
        another tool): its name; every value moves up by one, so 0 becomes that class and nothing is ignored.
        The project's own labels (synthetic ``labels/ground_truth``, predictions, scribbles) use value
        ``k + 1`` = class ``k`` and need no such option; an OME-Zarr label image's ``image-label`` names are the
        default ``class_names``.
    recipe.class_weights: None (plain cross-entropy), ``"sqrt"`` (inverse square root of each class's labelled
        pixel count, mean 1; helps rare classes), ``"balanced"`` (inverse count) or one weight per class.
    resume / overwrite: continue ``out/training/checkpoint.pt`` / replace an earlier run in ``out``.
    progress(done, total) after every step; cancel() -> True stops at the next step (the model so far
        is saved and ``result.cancelled`` is True). on_record(record) after every epoch with that epoch's
        history row (``epoch``, ``step``, ``train_loss``, ``lr``, validation metrics), on the calling thread.
    The resolved recipe is written to ``out/training/recipe.yaml``.
    """
    from napari_muvit.model import ModelCard

    recipe = TrainRecipe() if recipe is None else recipe
    if recipe.is_pretraining:
        raise ValueError("the recipe's task 'mae' is pre-training; fine-tuning needs task 'segmentation' or "
                         "'classification'.")
    task, levels, size, batch_size = recipe.task, recipe.levels, recipe.size, recipe.batch_size
    epochs, steps_per_epoch, seed = recipe.finetune_epochs, recipe.steps_per_epoch, recipe.seed
    lr, weight_decay, head, train_encoder = recipe.learning_rate, recipe.weight_decay, recipe.head, recipe.train_encoder
    class_weights, val_fraction = recipe.class_weights, recipe.val_fraction
    policy = device_policy(recipe.device, recipe.precision, recipe.threads)
    out, train_dir, ckpt_path = prepare_output(out, resume, overwrite)
    dev, precision = policy.device, recipe.precision
    (pyramid,) = open_slides([source])
    base_model, encoder, base_card = _load_base(base, dev)
    if levels is not None and tuple(levels) != tuple(encoder.levels):
        missing = [v for v in levels if v not in encoder.levels]
        if missing:
            raise ValueError(
                f"levels {tuple(levels)} are not all among the base model's levels {tuple(encoder.levels)}; "
                "choose a subset of them or pre-train a model with those levels."
            )
        encoder = encoder.extract_levels(tuple(int(v) for v in levels))
    levels = tuple(int(v) for v in encoder.levels)
    size = int(size or (base_card.crop_size if base_card is not None and base_card.crop_size else 256))
    if pyramid.n_channels != encoder.in_channels:
        raise ValueError(f"The slide has {pyramid.n_channels} channels but the model expects {encoder.in_channels}.")
    check_levels_available(pyramid, levels, encoder.patch_size[0])
    (normalizer,) = _normalizers([pyramid], recipe.normalization)
    data = make_task(task, pyramid, annotations, levels, size, recipe.class_names, val_fraction, seed, normalizer,
                     recipe.augment, recipe.background_class, recipe.dihedral)

    aside = set_aside(train_dir, overwrite, resume)  # every input is checked: move the old run aside
    torch.manual_seed(seed)
    weight = _class_weights(class_weights, data)
    weight = weight.to(dev) if weight is not None else None
    model = build_head_model(task, encoder, data.num_classes, head=head, train_encoder=train_encoder)
    if steps_per_epoch is None:
        n_train = data.train_labelled_px / size**2 if task == "segmentation" else 8 * len(data.train_rois)
        steps_per_epoch = int(min(500, max(4, math.ceil(n_train / batch_size))))
    total = int(epochs * steps_per_epoch)
    enc_params = [p for p in model.encoder.parameters() if p.requires_grad]
    enc_ids = {id(p) for p in model.encoder.parameters()}
    head_params = [p for p in model.parameters() if p.requires_grad and id(p) not in enc_ids]
    opt = make_optimizer(head_params, lr=lr, weight_decay=weight_decay)
    if enc_params:
        enc_opt_groups = make_optimizer(enc_params, lr=recipe.encoder_lr or lr / 10,
                                        weight_decay=weight_decay).param_groups
        for g in enc_opt_groups:
            opt.add_param_group({k: v for k, v in g.items() if k in ("params", "weight_decay", "lr")})
    warmup = recipe.warmup_steps if recipe.warmup_steps is not None else min(steps_per_epoch, max(1, total // 10))
    sched = make_scheduler(opt, total, warmup_steps=warmup)
    scaler = policy.grad_scaler()
    model.to(dev).train()  # a frozen encoder stays in eval mode (the heads handle that)
    history = History()
    start_epoch, metrics = 0, {}
    if resume:
        ckpt = load_checkpoint(ckpt_path)
        history = restore_training(ckpt, model, opt, sched, data.rng)
        if "scaler" in ckpt and scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch = int(ckpt["epoch"])
        metrics = {k: v for k, v in (history.rows[-1] if history.rows else {}).items()
                   if k not in ("epoch", "step", "train_loss", "lr", "seconds")}

    recipe.replace(levels=levels, size=size, epochs=epochs, steps_per_epoch=steps_per_epoch, lr=lr,
                   warmup_steps=warmup).save(_recipe_path(train_dir))
    cancelled, step = False, start_epoch * steps_per_epoch
    t0 = time.perf_counter()
    sampler_state = copy.deepcopy(data.rng.bit_generator.state)
    prefetch = Prefetcher(lambda: data.train_batch(batch_size), data.rng)
    try:
        for epoch in range(start_epoch, epochs):
            running = []
            for _ in range(steps_per_epoch):
                if check_cancel(cancel):
                    cancelled = True
                    break
                (img, bbox, target), sampler_state = prefetch.get()
                x, b = torch.from_numpy(img).to(dev), torch.from_numpy(bbox).to(dev)
                t = torch.from_numpy(target).to(dev)
                with policy.autocast():
                    logits = model(x, b)
                if (t != IGNORE).any():
                    loss = F.cross_entropy(logits.float(), t, weight=weight, ignore_index=IGNORE)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)  # clip the true gradients (a no-op unless fp16 loss scaling is on)
                    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]],
                                                   recipe.clip_grad)
                    scaler.step(opt)
                    scaler.update()
                    running.append(float(loss.detach()))
                sched.step()
                step += 1
                if progress is not None:
                    progress(step, total)
            if cancelled:
                break
            metrics = evaluate(model, data, batch_size, dev, precision, seed=seed) if _has_val(data) else {}
            history.append(epoch=epoch + 1, step=step, train_loss=float(np.mean(running)) if running else None,
                           lr=opt.param_groups[0]["lr"], seconds=round(time.perf_counter() - t0, 2), **metrics)
            amp = {"scaler": scaler.state_dict()} if scaler.is_enabled() else {}
            save_checkpoint(ckpt_path, model=model.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                            rng=capture_rng(sampler_state=sampler_state), history=history.rows, epoch=epoch + 1, **amp)
            history.write_csv(train_dir / "history.csv")
            history.plot(train_dir / "metrics.png", x="epoch", ys=("train_loss", "val_loss"), title=f"{task} loss")
            if on_record is not None:
                on_record(dict(history.rows[-1]))
    finally:
        prefetch.close()
    colors = class_colors_for(recipe.class_colors, data.num_classes)
    card = ModelCard(
        task=task, levels=list(levels), crop_size=int(size), in_channels=int(encoder.in_channels),
        class_names=list(data.class_names), class_colors=colors,
        normalization=normalizer.to_dict() if hasattr(normalizer, "to_dict") else {},
        pixel_size=list(pyramid.pixel_size) if pyramid.pixel_size else None,
        head={"type": head if task == "segmentation" else "classifier", "num_classes": data.num_classes},
        provenance=dict(kind=f"{task} fine-tuning", base=str(base), epochs=len(history.rows), steps=step,
                        batch_size=batch_size, lr=lr, train_encoder=train_encoder, seed=seed,
                        class_weights=class_weights if isinstance(class_weights, (str, type(None))) else list(class_weights),
                        source=str(getattr(pyramid, "name", "slide")), val_fraction=val_fraction,
                        validation={k: v for k, v in metrics.items() if isinstance(v, (int, float))}),
    )
    model.cpu().eval()
    publish_model(model, out, card)
    drop_aside(aside)
    return TrainResult(model_dir=out, history=history.rows, steps_done=step, total_steps=total,
                       cancelled=cancelled, metrics=metrics)


def _class_weights(spec, data) -> torch.Tensor | None:
    """Cross-entropy class weights (mean 1) from a spec; see :func:`finetune`."""
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec not in ("sqrt", "balanced"):
            raise ValueError(f"class_weights {spec!r} is not known; use 'sqrt', 'balanced' or one number per class.")
        if hasattr(data, "summary"):
            counts = data.summary.totals[1 : data.num_classes + 1].astype(float)
        else:
            counts = np.array([len(r) for r in data._by_class], dtype=float)
        w = 1.0 / np.maximum(counts, 1) ** (0.5 if spec == "sqrt" else 1.0)
    else:
        w = np.asarray(spec, dtype=float)
        if w.shape != (data.num_classes,) or np.any(w < 0):
            raise ValueError(f"class_weights needs {data.num_classes} non-negative numbers, got {list(w)}.")
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def _recipe_path(train_dir):
    from .recipe import RECIPE_NAME

    train_dir.mkdir(parents=True, exist_ok=True)
    return train_dir / RECIPE_NAME


def _has_val(data) -> bool:
    return len(getattr(data, "val_centers", getattr(data, "val_points", []))) > 0
