"""Interactive probe: fit a light per-token head on frozen multi-level features from sparse scribbles.

Features of the tiles touched by scribbles are computed once (no gradients), then only the probe is
optimised on the scribbled pixels: seconds on a CPU for a few dozen tiles, so it fits napari's
"paint a few strokes, press fit" loop.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..device import resolve_device
from .annotations import IGNORE, check_classes, open_label_image, read_label_crop
from .batches import check_levels_available, open_slides
from .runtime import check_cancel, limit_threads


@dataclass
class ProbeResult:
    """The fitted segmenter (``head="probe"``, with ``.card``) and facts about the fit."""

    model: torch.nn.Module
    class_names: list[str]
    train_accuracy: float
    seconds: float
    n_tiles: int
    losses: list[float] = field(default_factory=list)
    cancelled: bool = False


def _resolve_model(model):
    from napari_muvit.model import load_model

    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        model = load_model(model)
    return model


def scribble_tiles(labels, size: int, max_tiles: int, seed: int = 0) -> np.ndarray:
    """Centres ``(n, 2)`` world px of level-1 tiles (grid of ``size`` px from 0) containing scribbles."""
    from .annotations import summarise_labels

    max_value = int(labels.max().compute())
    summary = summarise_labels(labels, size, max(1, max_value) + 1)
    tiles = np.argwhere(summary.labelled)
    if len(tiles) > max_tiles:  # keep the most scribbled tiles
        counts = summary.counts[1:].sum(0)[tuple(tiles.T)]
        tiles = tiles[np.argsort(-counts, kind="stable")[:max_tiles]]
    from ...data.geometry import tile_centres

    return tile_centres(tiles, size)


def fit_probe(
    model,
    source,
    scribbles,
    *,
    class_names: list[str] | None = None,
    class_colors: list[str] | None = None,
    size: int | None = None,
    hidden: int = 0,
    steps: int = 150,
    lr: float = 5e-3,
    max_tiles: int = 48,
    normalizer=None,
    seed: int = 0,
    device="cpu",
    num_threads: int | None = None,
    progress=None,
    cancel=None,
) -> ProbeResult:
    """Fit ``MuViTSegmenter(encoder, K, head="probe")`` to scribbles on frozen features.

    model: any loaded model with ``.encoder`` or a model folder / ``"demo"``; its levels and crop size
        are used (``size`` overrides the crop size).
    scribbles: ``(Y, X)`` label image at full resolution (napari Labels data), 0 = not scribbled,
        ``k`` = class ``k-1``.
    progress(done, total): feature tiles then optimisation steps. cancel() -> True stops early.
    """
    from napari_muvit.data import Normalizer
    from napari_muvit.model import ModelCard, MuViTSegmenter

    limit_threads(num_threads)
    t0 = time.perf_counter()
    dev = resolve_device(device)
    base = _resolve_model(model)
    encoder = copy.deepcopy(base.encoder)  # freezing / moving it must not change the caller's model
    card = getattr(base, "card", None)
    size = int(size or (card.crop_size if card is not None and card.crop_size else 256))
    levels = tuple(int(v) for v in encoder.levels)
    (pyramid,) = open_slides([source])
    if pyramid.n_channels != encoder.in_channels:
        raise ValueError(f"The slide has {pyramid.n_channels} channels but the model expects {encoder.in_channels}.")
    check_levels_available(pyramid, levels, encoder.patch_size[0])
    labels = open_label_image(scribbles, pyramid.shape[-2:])
    _, class_names = check_classes(labels, class_names, max(4, size // 4))
    if len(class_names) < 2:
        raise ValueError("Scribble at least two classes (label values 1 and 2) before fitting the probe.")
    if normalizer is None:
        policy = (card.normalization or {}).get("policy") if card is not None else None
        normalizer = Normalizer.from_dict(card.normalization) if policy == "fixed" else Normalizer.from_pyramid(pyramid)

    torch.manual_seed(seed)
    seg = MuViTSegmenter(encoder, len(class_names), head="probe", hidden=hidden, freeze_encoder=True).to(dev)
    centers = scribble_tiles(labels, size, max_tiles, seed)
    total = len(centers) + steps
    feats, images, targets = [], [], []
    cancelled = False
    with torch.no_grad():
        for i, c in enumerate(centers):
            if check_cancel(cancel):
                cancelled = True
                break
            img, bbox = pyramid.crops(tuple(c), levels, size, normalizer=normalizer)
            x = torch.from_numpy(img[None]).to(dev)
            feats.append(seg.features(x, torch.from_numpy(bbox[None]).to(dev)))
            images.append(x)
            lab = read_label_crop(labels, c, size)
            targets.append(torch.from_numpy(np.where(lab > 0, lab - 1, IGNORE)[None]).to(dev))
            if progress is not None:
                progress(i + 1, total)
    losses: list[float] = []
    acc = float("nan")
    if feats and not cancelled:
        fused, x, t = torch.cat(feats), torch.cat(images), torch.cat(targets)
        # class weights: scribbles are usually unbalanced (one long stroke of background)
        counts = torch.bincount(t[t != IGNORE].flatten(), minlength=len(class_names)).float()
        weight = (counts.sum() / counts.clamp_min(1) / len(class_names)).to(dev)
        opt = torch.optim.Adam(seg.head.parameters(), lr=lr)
        seg.head.train()
        for step in range(steps):
            if check_cancel(cancel):
                cancelled = True
                break
            logits = seg.head_forward(fused, x)
            loss = F.cross_entropy(logits, t, weight=weight, ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(len(centers) + step + 1, total)
        seg.eval()
        with torch.no_grad():
            pred = seg.head_forward(fused, x).argmax(1)
            keep = t != IGNORE
            acc = float((pred[keep] == t[keep]).float().mean())
    from .finetune import class_colors_for

    colors = class_colors_for(class_colors, len(class_names))
    seg.card = ModelCard(
        task="segmentation", levels=levels, crop_size=size, in_channels=encoder.in_channels,
        class_names=list(class_names), class_colors=colors, normalization=normalizer.to_dict(),
        pixel_size=list(pyramid.pixel_size) if pyramid.pixel_size else None, head=dict(seg.head_config),
        provenance=dict(kind="probe on scribbles", steps=len(losses), tiles=len(feats), train_accuracy=acc,
                        base=dict(getattr(card, "provenance", {}) or {}).get("kind", "unknown") if card else "unknown"),
    )
    seg.cpu().eval()
    return ProbeResult(model=seg, class_names=list(class_names), train_accuracy=acc,
                       seconds=time.perf_counter() - t0, n_tiles=len(feats), losses=losses, cancelled=cancelled)
