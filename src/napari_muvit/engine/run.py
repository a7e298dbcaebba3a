"""A prediction run's store and bookkeeping, shared by the in-process loop (`predict`) and the dask driver
(`distributed`): create or reopen the output store (`open_run`, checking a resumed run against its recipe,
model and layout), the feature-overview PCA, the run's `PredictionResult`, and `conclude` / `finish`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import safety
from .book import TileBook
from .context import IDENTITY, RunContext, foreground_tiles, package_versions
from .device import auto_batch_size, autocast
from .store import DONE, OutputStore
from .tileops import read_batch

PCA_SAMPLE_TILES = 32
TABLE_ON_STOP_MAX_TILES = 1_000_000


@dataclass
class PredictionResult:
    """Where the output went and how far the run got (``complete`` False after a cancel)."""

    path: Path
    task: str
    complete: bool
    cancelled: bool = False
    tiles_total: int = 0
    tiles_done: int = 0
    tiles_background: int = 0
    seconds: float = 0.0
    info: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)  # one sentence each, e.g. source chunks read as zeros


def result_of(ctx, store, book, cancelled, seconds) -> PredictionResult:
    return PredictionResult(
        path=store.path, task=ctx.task, complete=book.complete and not cancelled, cancelled=cancelled,
        tiles_total=book.total, tiles_done=book.n_done, tiles_background=book.n_background, seconds=seconds,
        info={"batch_size": store.meta.get("batch_size"), "grid_shape": list(ctx.grid.grid_shape),
              "oom_halvings": ctx.extra.get("oom_halvings", 0),
              "missing_source_chunks": len(ctx.pyramid.missing_chunks)},
        warnings=[m for m in [ctx.pyramid.missing_chunks_message()] if m],
    )


# ---- store set-up ------------------------------------------------------------------------------------
def open_run(ctx: RunContext, resuming: bool, given_normalization: bool = True) -> tuple[OutputStore, TileBook]:
    """Create the store (or reopen it when resuming, checking it was started with the same recipe)."""
    out = ctx.recipe.out
    fg = foreground_tiles(ctx)
    safety.check_output_path(out, [ctx.recipe.source, ctx.recipe.model, ctx.recipe.mask])  # never write over an input
    if resuming:
        safety.check_resumable(out)
        store = OutputStore(out)
        check_layout(store, ctx)
        safety.check_fingerprint(store.meta.get("source_fingerprint"), ctx.pyramid, out)
        old, new = store.meta.get("recipe", {}), ctx.recipe.to_dict()
        for key in IDENTITY:
            new_v = new[key]
            if key == "normalization" and not given_normalization:
                continue  # resolved from the slide again: the stored values are used below
            if _norm(old.get(key)) != _norm(new_v):
                raise ValueError(
                    f"output {out!r} was started with {key}={old.get(key)!r}, not {new_v!r}; "
                    "resume with the same settings or write to a new output."
                )
        if store.meta.get("model_hash") != ctx.model_hash:
            raise ValueError(f"output {out!r} was started with another model (hash {store.meta.get('model_hash')}); "
                             "resume with the same model or write to a new output.")
        safety.acquire_lock(out)  # one run per store, taken once every check has passed
        # the stored resolved recipe wins: same normalisation and batch boundaries as the first run
        from napari_muvit.data import Normalizer

        ctx.normalizer = Normalizer.from_dict(old["normalization"])
        ctx.recipe = ctx.recipe.replace(normalization=old["normalization"])
        if ctx.output.mode == "direct":
            if store.meta.get("pca") is None:  # stopped before the PCA was stored
                store.set_meta(pca=fit_feature_pca(ctx, fg))
            ctx.output.pca = store.meta["pca"]
    else:
        batch_size = _resolve_batch_size(ctx)
        attrs = {"task": ctx.task, "recipe": ctx.recipe.to_dict(), "versions": package_versions(),
                 "model_hash": ctx.model_hash, "grid": ctx.grid.to_dict(), "batch_size": batch_size,
                 "score_names": ctx.output.score_names, "levels": list(ctx.levels), "patch_size": ctx.patch,
                 "class_names": getattr(ctx.output, "class_names", None), "source_shape": list(ctx.pyramid.shape),
                 "source_fingerprint": safety.source_fingerprint(ctx.pyramid)}
        labels = ctx.output.labels
        with safety.replacing(out):  # an old store (--overwrite) is deleted only once the new one exists
            store = OutputStore.create(
                out, image=ctx.output.image_spec(ctx.grid, ctx.layout), region=ctx.grid.region, labels=labels,
                label_colors=getattr(ctx.output, "class_colors", None), pixel_size=ctx.pyramid.pixel_size,
                unit=ctx.pyramid.unit, attrs=attrs, origin=(0, 0) if ctx.layout is not None else None,
                translation=getattr(ctx.pyramid, "translation", (0.0, 0.0)),
                layout=ctx.layout.to_dict() if ctx.layout is not None else _region_layout(ctx))
        safety.acquire_lock(out)
        if ctx.output.mode == "direct":
            store.set_meta(pca=fit_feature_pca(ctx, fg))
    book = TileBook(ctx.grid, store, ctx.output.mode, fg, len(ctx.output.score_names), int(store.meta["batch_size"]),
                    layout=ctx.layout)
    book.save(force=True)
    return store, book


def _region_layout(ctx: RunContext) -> dict:
    """Layout record of a classifier tile grid or a feature overview (region extent, float32, level 1)."""
    spec = ctx.output.image_spec(ctx.grid)
    return {"version": 2, "extent": "region", "level": 1, "chunks": list(spec["chunks"][1:]),
            "prob_dtype": str(spec["dtype"])}


def check_layout(store: OutputStore, ctx: RunContext) -> None:
    """A store is resumed only in the output layout it was started with (one sentence otherwise)."""
    want = ctx.layout.to_dict() if ctx.layout is not None else None
    have = store.meta.get("layout")
    if ctx.layout is not None and have is None:
        raise ValueError(f"output {str(store.path)!r} was written in the previous store layout (one chunk per tile, "
                         "float32); it cannot be resumed by this version, so write to a new output.")
    if want is not None and have != want:
        diff = ", ".join(f"{k}={have.get(k)!r}, not {want[k]!r}" for k in want if have.get(k) != want[k])
        raise ValueError(f"output {str(store.path)!r} was started with another output layout ({diff}); resume with "
                         "the same --prob-dtype and --output-level or write to a new output.")


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def _resolve_batch_size(ctx: RunContext) -> int:
    if ctx.recipe.batch_size != "auto":
        return int(ctx.recipe.batch_size)
    S, L, C = ctx.grid.tile, len(ctx.levels), ctx.pyramid.n_channels

    def probe(b):
        x = torch.zeros((b, L, C, S, S), device=ctx.device)
        bbox = torch.zeros((b, L, 2, 2), device=ctx.device)
        with torch.inference_mode(), autocast(ctx.device, ctx.dtype):
            ctx.model(x, bbox) if ctx.task != "mae" else ctx.model.encoder(x, bbox)

    return auto_batch_size(probe, ctx.device)


def fit_feature_pca(ctx: RunContext, fg: np.ndarray | None) -> dict:
    """Fit the RGB overview's PCA on up to 32 evenly spaced tiles of ``fg`` (the tiles to predict; None = all)."""
    flat = np.flatnonzero(fg) if fg is not None else np.arange(ctx.grid.n_tiles)
    if not len(flat):
        flat = np.zeros(1, np.int64)
    pick = flat[np.unique(np.linspace(0, len(flat) - 1, min(PCA_SAMPLE_TILES, len(flat))).round().astype(int))]
    feats = []
    for k in range(0, len(pick), 8):
        batch = [ctx.grid.tile_ij(p) for p in pick[k : k + 8]]
        x, bbox = read_batch(ctx, batch)
        xt, bt = ctx.batch_tensors(x, bbox)
        with autocast(ctx.device, ctx.dtype):
            feats.append(ctx.output.features(ctx.model, xt, bt))
    return ctx.output.fit_pca(np.concatenate(feats))


def conclude(ctx, store, book, cancelled: bool) -> None:
    """`finish` a complete run; an interrupted one saves its state and tile table for ``resume``."""
    if not cancelled and book.complete:
        finish(ctx, store, book)
    else:
        book.save(force=True)
        if book.total <= TABLE_ON_STOP_MAX_TILES:  # huge grids: the state file is the record until the end
            store.write_tile_table(ctx.grid, book.state, book.scores, ctx.output.score_names)
    safety.release_lock(store.path)


def finish(ctx, store, book) -> None:
    """Tile-grid image (classifiers), tile table, output pyramid, scratch removal, ``complete`` flag."""
    if ctx.output.mode == "tile":
        probs, labels = ctx.output.tile_image(book.state, book.scores, DONE)
        store.image[...] = probs
        store.labels[...] = labels
    store.write_tile_table(ctx.grid, book.state, book.scores, ctx.output.score_names)
    from .device import io_threads

    workers = int(ctx.recipe.extra.get("io_threads") or io_threads(ctx.device))  # the run's writer threads
    store.build_pyramid(ctx.layout.output_box() if ctx.layout is not None else None, workers=workers)
    store.clear_scratch()
    store.set_meta(complete=True)
