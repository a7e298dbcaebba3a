"""The teach dock's training jobs, run in the engine worker process (`engine/process_child.py`).

Each takes one picklable dict of settings built by its tab (paths, numpy arrays, plain numbers) plus the
engine callbacks ``progress``, ``cancel`` and ``on_record``, and returns plain objects only (namespaces,
dicts, numpy arrays, paths): the GUI process unpickles them without importing torch. ``pid`` in every result
is the worker process's id.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def _namespace(result, **extra) -> SimpleNamespace:
    from napari_muvit.engine.process_child import plain

    return SimpleNamespace(**vars(plain(result)), pid=os.getpid(), **extra)


def pretrain_job(kw: dict, progress=None, cancel=None, on_record=None) -> SimpleNamespace:
    """MR-MAE pre-training as the tab says, then the reconstruction preview around ``kw["center_yx"]``.

    kw: ``source`` (path or arrays), ``levels``, ``size``, ``steps``, ``batch_size``, ``out``, ``center_yx``.
    Returns the `TrainResult` fields plus ``preview`` (see `reconstruction_preview`; None when it could not
    be made) and ``preview_error`` (the reason).
    """
    from napari_muvit.engine.training import TrainRecipe, pretrain

    recipe = TrainRecipe(task="mae", levels=kw["levels"], size=kw["size"], steps=kw["steps"],
                         batch_size=kw["batch_size"], preview_every=0)
    result = pretrain([kw["source"]], kw["out"], recipe, progress=progress, cancel=cancel, on_record=on_record)
    preview, error = None, None
    try:
        preview = reconstruction_preview(result.model_dir, kw["source"], kw["center_yx"])
    except (ValueError, FileNotFoundError) as exc:  # the model is saved either way; previews are extra
        error = str(exc)
    return _namespace(result, preview=preview, preview_error=error)


def finetune_job(kw: dict, progress=None, cancel=None, on_record=None) -> SimpleNamespace:
    """Fine-tuning as the tab says; each epoch's history row goes to ``on_record``.

    kw: ``source``, ``task``, ``annotations`` (segmentation: ``(Y, X)`` label array; classification: a list of
    ``{"polygon": (N, 2) world px, "label": str}``), ``model``, ``levels``, ``epochs``, ``lr``,
    ``train_encoder``, ``out``.
    """
    from napari_muvit.engine.training import TrainRecipe, finetune
    from napari_muvit.engine.training.annotations import ROI

    recipe = TrainRecipe(task=kw["task"], levels=kw["levels"], epochs=kw["epochs"], lr=kw["lr"],
                         train_encoder=kw["train_encoder"])
    annotations = kw["annotations"]
    if kw["task"] == "classification":
        annotations = [ROI(polygon=np.asarray(r["polygon"], float), label=str(r["label"])) for r in annotations]
    result = finetune(kw["source"], annotations, kw["model"], kw["out"], recipe, progress=progress,
                      cancel=cancel, on_record=on_record)
    return _namespace(result)


def probe_job(kw: dict, progress=None, cancel=None, on_record=None) -> dict:
    """Fit the scribble probe, save it as a model folder ``kw["model_dir"]`` and predict ``kw["region"]``
    (world px, None = whole slide) with it into the store ``kw["store"]``.

    kw: ``source``, ``labels`` (``(Y, X)``, 0 = not painted, k = class k-1), ``model``, ``class_names``,
    ``class_colors`` (one per class index, the scribbles' palette), ``region``, ``store``, ``model_dir``.
    Records: one ``{"step", "loss"}`` row per optimisation step, then ``{"step", "accuracy"}``.
    Returns ``losses``, ``train_accuracy``, ``class_names``, ``seconds``, ``cancelled``, ``model_dir`` (None
    when cancelled), ``store`` (None when cancelled) and ``pid``.
    """
    from napari_muvit.engine.model_runs import predict_with_model
    from napari_muvit.engine.training import fit_probe
    from napari_muvit.model import save_model

    fit = fit_probe(kw["model"], kw["source"], kw["labels"], class_names=kw["class_names"],
                    progress=progress, cancel=cancel)
    colors = kw.get("class_colors")
    if colors and getattr(fit.model, "card", None) is not None:  # the prediction's colours = the scribbles'
        fit.model.card.class_colors = list(colors[: len(fit.class_names)])
    if on_record is not None:
        for step, loss in enumerate(fit.losses, start=1):
            on_record({"step": step, "loss": float(loss)})
        on_record({"step": len(fit.losses), "accuracy": float(fit.train_accuracy)})
    out = {"losses": [float(v) for v in fit.losses], "train_accuracy": float(fit.train_accuracy),
           "class_names": list(fit.class_names), "seconds": float(fit.seconds), "cancelled": bool(fit.cancelled),
           "model_dir": None, "store": None, "pid": os.getpid()}
    if fit.cancelled:
        return out
    out["model_dir"] = save_model(fit.model, Path(kw["model_dir"]), card=fit.model.card)
    predict_with_model(fit.model, kw["source"], kw["store"], model_name="scribble probe", region=kw["region"],
                       cancel=cancel)
    out["store"] = Path(kw["store"])
    return out


def reconstruction_preview(model_dir, source, center_yx) -> dict:
    """The MAE's reconstruction of the nested crops around `center_yx` (world px).

    Returns `levels`, `bboxes (L, 2, 2)` world px, `reconstruction (L, C, S, S)` (masked patches
    predicted, visible ones kept) and `masked (L, C, S, S)` (NaN where masked), normalised intensities.
    """
    import torch

    from napari_muvit.data import Normalizer, open_pyramid
    from napari_muvit.engine.training.previews import mask_to_pixels
    from napari_muvit.model import load_model

    mae = load_model(model_dir)
    card, enc = mae.card, mae.encoder
    pyramid = open_pyramid(source)
    policy = (card.normalization or {}).get("policy")
    normalizer = Normalizer.from_dict(card.normalization) if policy else Normalizer.from_pyramid(pyramid)
    levels = tuple(int(v) for v in enc.levels)
    img, bbox = pyramid.crops(tuple(center_yx), levels, int(card.crop_size), normalizer=normalizer)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        out = mae(torch.from_numpy(img[None]), torch.from_numpy(np.asarray(bbox, np.float32)[None]))
    size = img.shape[-2:]
    grid = tuple(s // p for s, p in zip(size, enc.patch_size))
    masked = mask_to_pixels(out["mask"][0].numpy(), len(levels), grid, tuple(enc.patch_size))[:, None]
    pred = out["pred"][0].float().numpy()
    return {"levels": levels, "bboxes": np.asarray(bbox), "reconstruction": np.where(masked, pred, img),
            "masked": np.where(masked, np.nan, img)}
