"""`RunContext`: a recipe resolved against its slide, its model and this machine.

Every check a user can fail happens here, before any tile is read, with one readable sentence:
unknown model folder, levels the model was not trained on, channel mismatch, region outside the slide,
tile not divisible by the patch size.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .device import resolve_device, resolve_precision
from .grid import TileGrid
from .recipe import Recipe
from .tasks import make_output, model_task

# identifying fields: a resumed store must have been written with the same values
IDENTITY = ("source", "model", "levels", "region", "tile", "overlap", "normalization", "foreground", "mask",
            "prob_dtype", "output_level")


@dataclass
class RunContext:
    recipe: Recipe  # fully resolved (levels, region, tile, overlap, normalization filled in)
    pyramid: object
    model: torch.nn.Module
    task: str
    output: object
    grid: TileGrid
    normalizer: object
    device: torch.device
    dtype: torch.dtype | None
    patch: int
    model_hash: str
    layout: object = None  # `stitch.OutputLayout` of a segmentation run (None for other tasks)
    extra: dict = field(default_factory=dict)

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(self.recipe.levels)

    def batch_tensors(self, x: np.ndarray, bbox: np.ndarray):
        return (torch.from_numpy(x).to(self.device, non_blocking=True),
                torch.from_numpy(bbox).to(self.device, non_blocking=True))


def open_source(recipe: Recipe, pyramid=None):
    from napari_muvit.data import open_pyramid

    if pyramid is not None:
        return pyramid
    if not recipe.source:
        raise ValueError("no source image was given; pass the path of a slide (OME-Zarr, TIFF, SVS, ...).")
    if not Path(recipe.source).exists():
        raise FileNotFoundError(f"source {recipe.source!r} does not exist; give the path of an existing slide.")
    return open_pyramid(recipe.source, strict=recipe.strict)


def open_model(recipe: Recipe, device, model=None):
    if model is not None:
        return model.to(device).eval()
    from napari_muvit.model import load_model

    return load_model(recipe.model, device=str(device))


def compute_model_hash(recipe: Recipe, model) -> str:
    try:
        from napari_muvit.model import model_hash

        if recipe.model and (recipe.model == "demo" or Path(recipe.model).is_dir()):
            return model_hash(recipe.model)
    except (FileNotFoundError, ValueError, ImportError):
        pass
    h = hashlib.sha256()  # a model built in memory: hash its weights
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def package_versions() -> dict:
    out = {}
    for name in ("napari-muvit", "torch", "numpy", "zarr", "dask"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def resolve(recipe: Recipe, *, model=None, pyramid=None) -> RunContext:
    """Open the slide and the model and fill every ``None``/``auto`` of the recipe."""
    from napari_muvit.data import Normalizer

    recipe = recipe.replace().validate()
    device = resolve_device(recipe.device)
    dtype = resolve_precision(recipe.precision, device)
    pyramid = open_source(recipe, pyramid)
    if getattr(pyramid, "spatial_ndim", 2) != 2:
        raise ValueError("the prediction engine works on 2-D slides; this image is 3-D (z, y, x).")
    if recipe.strict:
        pyramid.strict = True
        pyramid.check_all_chunks()  # a missing source chunk is refused before any output exists
    model = open_model(recipe, device, model)
    task = model_task(model)
    encoder = model.encoder
    card = getattr(model, "card", None)
    model_levels = tuple(int(v) for v in encoder.levels)
    levels = tuple(recipe.levels) if recipe.levels else tuple(getattr(card, "levels", None) or model_levels)
    if levels != model_levels:
        if task == "encoder" and set(levels) <= set(model_levels):
            model = encoder.extract_levels(levels).eval()
            model.card = card
        else:
            raise ValueError(
                f"levels {','.join(map(str, levels))} were not used to train this model; it was trained on "
                f"levels {','.join(map(str, model_levels))}."
            )
    if pyramid.n_channels != encoder.in_channels:
        raise ValueError(
            f"the slide has {pyramid.n_channels} channel(s) but the model expects {encoder.in_channels}; "
            "use a slide with matching channels or a model trained on them."
        )
    patch = int(np.atleast_1d(encoder.patch_size)[0])
    tile = recipe.tile or getattr(card, "crop_size", None) or 256
    if tile % patch:
        raise ValueError(
            f"tile {tile} is not divisible by the model's patch size {patch}; use a multiple of {patch}, "
            f"e.g. {max(1, tile // patch) * patch}."
        )
    feature_task = task in ("encoder", "mae")
    step = 2 * patch if feature_task else 2
    overlap = recipe.overlap if recipe.overlap is not None else (tile // 4) // step * step
    if overlap > tile // 2:
        raise ValueError(f"overlap {overlap} is more than half the tile size {tile}; use at most {tile // 2 // step * step}.")
    if overlap % step:
        raise ValueError(
            f"overlap {overlap} must be a multiple of {step} for this {task} model (twice the patch size)."
        )
    h, w = pyramid.shape[-2:]
    region = recipe.region or (0, h, 0, w)
    y0, y1, x0, x1 = region
    if y0 < 0 or x0 < 0 or y1 > h or x1 > w:
        raise ValueError(
            f"region {y0}:{y1},{x0}:{x1} lies outside the slide; use coordinates within 0:{h},0:{w} or 'all'."
        )
    if recipe.normalization:
        normalizer = Normalizer.from_dict(recipe.normalization)
    elif card is not None and getattr(card, "normalization", None):
        normalizer = Normalizer.from_dict(card.normalization)
    else:
        normalizer = Normalizer.from_pyramid(pyramid)
    resolved = recipe.replace(levels=levels, region=tuple(region), tile=int(tile), overlap=int(overlap),
                              normalization=normalizer.to_dict())
    grid = TileGrid(tuple(region), int(tile), int(overlap))
    output = make_output(model, task, patch)
    layout = None
    if output.mode == "blend":
        from .output_layout import DEFAULT_CHUNK, OutputLayout

        chunk = recipe.extra.get("output_chunk") or DEFAULT_CHUNK
        chunk = (int(chunk), int(chunk)) if np.isscalar(chunk) else tuple(int(c) for c in chunk)
        layout = OutputLayout(slide_shape=(int(h), int(w)), region=tuple(region), level=recipe.output_level,
                              chunk=chunk, prob_dtype=recipe.prob_dtype)
    elif recipe.output_level != 1:
        raise ValueError(f"output level {recipe.output_level} applies to segmentation models; this {task} model "
                         "writes one value per tile or patch, so use output level 1.")
    return RunContext(recipe=resolved, pyramid=pyramid, model=model, task=task, output=output, grid=grid,
                      normalizer=normalizer, device=device, dtype=dtype, patch=patch,
                      model_hash=compute_model_hash(recipe, model), layout=layout)


def foreground_tiles(ctx: RunContext) -> np.ndarray | None:
    """``(rows, cols)`` bool: tiles to predict, or None for all of them. With ``foreground``, tiles whose owned
    square holds tissue; with ``mask``, tiles whose owned square holds a non-zero mask pixel; both: either."""
    if not ctx.recipe.foreground and not ctx.recipe.mask:
        return None
    rows, cols = ctx.grid.grid_shape
    out = np.zeros((rows, cols), bool)
    masks = []
    if ctx.recipe.foreground:
        from napari_muvit.data.foreground import foreground_mask

        mask, level = foreground_mask(ctx.pyramid)
        masks.append((mask, float(level), float(level)))
    if ctx.recipe.mask:
        masks.append(read_mask(ctx.recipe.mask, ctx.pyramid.shape[-2:]))
    for mask, fy, fx in masks:
        # mask pixels [ys, ye) x [xs, xe) under each owned square, counted with a summed-area table
        m = np.asarray(mask, bool)
        sat = np.zeros((m.shape[0] + 1, m.shape[1] + 1), np.int64)
        np.cumsum(np.cumsum(m, axis=0), axis=1, out=sat[1:, 1:])
        ys, ye = _mask_spans([ctx.grid.owned_world(i, 0)[:2] for i in range(rows)], fy, m.shape[0])
        xs, xe = _mask_spans([ctx.grid.owned_world(0, j)[2:] for j in range(cols)], fx, m.shape[1])
        for a in range(0, rows, 1024):  # bounded temporaries on huge grids
            sl = slice(a, a + 1024)
            count = (sat[ye[sl, None], xe[None]] - sat[ys[sl, None], xe[None]]
                     - sat[ye[sl, None], xs[None]] + sat[ys[sl, None], xs[None]])
            out[sl] |= count > 0
    return out


def _mask_spans(boxes, f, n):
    """World ``[a, b)`` spans -> mask index spans ``[a // f, max(a // f + 1, ceil(b / f)))`` clipped to ``n``."""
    b = np.asarray(boxes, np.float64)
    start = (b[:, 0] // f).astype(np.int64)
    end = np.maximum(start + 1, np.ceil(b[:, 1] / f).astype(np.int64))
    return np.clip(start, 0, n), np.clip(end, 0, n)


def read_mask(path: str, slide_shape) -> tuple[np.ndarray, float, float]:
    """A 2D mask file -> ``(mask bool, fy, fx)`` where ``f`` = world px per mask pixel (whole factors)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"mask {path!r} does not exist; give a .npy, .tif or zarr mask image.")
    if p.suffix.lower() in (".geojson", ".json"):  # annotations (QuPath GeoJSON): predict inside them
        from napari_muvit.data.qupath import annotation_mask

        return annotation_mask(p, slide_shape)
    from .training.annotations import read_label_file

    mask = np.asarray(read_label_file(p))
    if mask.ndim != 2:
        raise ValueError(f"mask {path!r} has shape {mask.shape}; it must be a 2D image (y, x).")
    fy, fx = slide_shape[0] / mask.shape[0], slide_shape[1] / mask.shape[1]
    if abs(fy - round(fy)) > 0.02 * fy or abs(fx - round(fx)) > 0.02 * fx or round(fy) != round(fx):
        raise ValueError(
            f"mask {path!r} of shape {mask.shape} does not cover the slide {tuple(slide_shape)} at one whole "
            "downsample factor; save it at the slide's size divided by 1, 2, 4, ..."
        )
    return mask != 0, float(round(fy)), float(round(fx))
