"""What a model's outputs become in the store, one adapter per model task.

* ``segmentation`` (mode ``blend``): per-class probabilities ``(K, S, S)`` per tile, blended into level-1
  chunks; labels = argmax + 1; tile scores = mean probability per class and mean entropy (nats).
* ``classification`` (mode ``tile``): per-class probabilities per tile; the image is the tile grid
  (one pixel per tile), written once at the end from the scores.
* ``encoder`` / ``mae`` (mode ``direct``): finest-level token features projected on 3 PCA components
  fitted on a sample of tiles, scaled to [0, 1] (RGB overview at patch resolution); each tile writes its
  owned tokens. MAE adds a per-tile masked reconstruction error (fixed mask seed per tile).
"""

from __future__ import annotations

import numpy as np
import torch


def model_task(model) -> str:
    card = getattr(model, "card", None)
    if card is not None and getattr(card, "task", None):
        return card.task
    task = getattr(model, "task", None)
    if task:
        return task
    return "mae" if hasattr(model, "decoder") else "encoder"


def _entropy(probs: np.ndarray, axis=0) -> np.ndarray:
    p = np.clip(probs, 1e-12, 1.0)
    return -(probs * np.log(p)).sum(axis=axis)


class _ClassOutput:
    """Per-class probabilities: tile scores are ``p:<class>`` and the entropy."""

    def __init__(self, class_names, class_colors=None):
        self.class_names = list(class_names)
        self.class_colors = list(class_colors or [])
        self.score_names = [f"p:{n}" for n in self.class_names] + ["entropy"]
        self.labels = self.class_names

    @property
    def label_dtype(self):
        return np.uint8 if len(self.class_names) < 255 else np.uint16


class SegmentationOutput(_ClassOutput):
    mode = "blend"

    def image_spec(self, grid, layout=None) -> dict:
        """Whole-slide image at the layout's output level (`engine/stitch.py`); without a layout, the region."""
        k = len(self.class_names)
        if layout is None:
            h, w = grid.shape
            return {"name": "probabilities", "channel_names": self.class_names, "colors": self.class_colors,
                    "shape": (k, h, w), "chunks": (k, grid.stride, grid.stride), "factor": 1, "dtype": "float32"}
        h, w = layout.shape
        ch, cw = layout.chunks
        if layout.prob_dtype == "none":  # labels only: the image is the labels as one channel
            return {"name": "labels", "channel_names": ["class"], "colors": ["FFFFFF"], "shape": (1, h, w),
                    "chunks": (1, ch, cw), "factor": layout.level, "dtype": "uint8"}
        return {"name": "probabilities", "channel_names": self.class_names, "colors": self.class_colors,
                "shape": (k, h, w), "chunks": (k, ch, cw), "factor": layout.level, "dtype": layout.prob_dtype}

    @torch.inference_mode()
    def probabilities(self, model, x, bbox, buffers=None) -> torch.Tensor:
        """``(B, K, S, S)`` float32 class probabilities, left on the model's device (the stitcher runs there).
        ``buffers`` (a `tileops.BufferPool`, on a CPU): the result is written into a reused tensor from it (the
        same softmax kernel, so the same values) instead of a fresh one."""
        logits = model(x, bbox).float()
        if buffers is not None and logits.device.type == "cpu":
            return torch.softmax(logits, 1, out=buffers.take_tensor(logits.shape))
        return torch.softmax(logits, dim=1)

    def run(self, model, x, bbox) -> np.ndarray:
        """``(B, K, S, S)`` float32 class probabilities (numpy)."""
        return self.probabilities(model, x, bbox).cpu().numpy()

    def tile_scores(self, grid, tiles, probs) -> np.ndarray:
        """``(B, K + 1)``: each tile's mean probability per class and mean entropy (nats) over its owned
        square, from its own prediction ``probs (B, K, S, S)`` (numpy or torch): `stitch.tile_scores`."""
        from .stitch import tile_scores

        return tile_scores(grid, tiles, probs)

class ClassificationOutput(_ClassOutput):
    mode = "tile"

    prob_dtype = "float32"

    def image_spec(self, grid, layout=None) -> dict:
        rows, cols = grid.grid_shape
        k = len(self.class_names)
        return {"name": "tile probabilities", "channel_names": self.class_names, "colors": self.class_colors,
                "shape": (k, rows, cols), "chunks": (k, min(rows, 1024), min(cols, 1024)),
                "factor": grid.stride, "dtype": "float32"}

    @torch.inference_mode()
    def run(self, model, x, bbox) -> np.ndarray:
        """``(B, K + 1)``: class probabilities and their entropy."""
        probs = torch.softmax(model(x, bbox).float(), dim=1).cpu().numpy()
        return np.concatenate([probs, _entropy(probs, axis=1)[:, None]], axis=1).astype(np.float32)

    def tile_image(self, state, scores, done_code):
        """Image ``(K, rows, cols)`` and labels from the per-tile scores (0 where not predicted)."""
        k = len(self.class_names)
        done = state == done_code
        probs = np.where(done[None], np.nan_to_num(np.moveaxis(scores[..., :k], -1, 0)), 0).astype(np.float32)
        labels = np.where(done, probs.argmax(axis=0) + 1, 0).astype(self.label_dtype)
        return probs, labels


class FeatureOutput:
    """Encoder / MAE: PCA RGB of the finest level's token features (PCA fitted by `fit_pca`)."""

    mode = "direct"

    def __init__(self, patch: int, mae: bool = False):
        self.patch = int(patch)
        self.mae = mae
        self.score_names = ["pc1", "pc2", "pc3"] + (["mae_error"] if mae else [])
        self.labels = None
        self.pca: dict | None = None  # mean (D,), components (3, D), lo (3,), hi (3,)

    def image_spec(self, grid, layout=None) -> dict:
        h, w = grid.shape
        p = self.patch
        c = max(1, grid.stride // p)
        return {"name": "feature PCA", "channel_names": ["pc1", "pc2", "pc3"],
                "colors": ["FF0000", "00FF00", "0000FF"], "shape": (3, -(-h // p), -(-w // p)),
                "chunks": (3, c, c), "factor": p, "dtype": "float32"}

    @staticmethod
    def _encoder(model):
        return model.encoder

    @torch.inference_mode()
    def features(self, model, x, bbox) -> np.ndarray:
        """Finest-level token features ``(B, D, h, w)`` float32."""
        return self._encoder(model).spatial_features(x, bbox)[:, 0].float().cpu().numpy()

    def fit_pca(self, feats: np.ndarray) -> dict:
        """Fit 3 components on ``feats (n, D, h, w)``; colour range = 1st..99th percentile per component."""
        f = np.moveaxis(feats, 1, -1).reshape(-1, feats.shape[1]).astype(np.float64)
        mean = f.mean(axis=0)
        _, _, vt = np.linalg.svd(f - mean, full_matrices=False)
        comps = vt[:3]
        if comps.shape[0] < 3:
            comps = np.vstack([comps, np.zeros((3 - comps.shape[0], f.shape[1]))])
        # sign convention: the largest-magnitude loading is positive, so refits agree
        signs = np.sign(comps[np.arange(3), np.abs(comps).argmax(axis=1)])
        comps = comps * np.where(signs == 0, 1, signs)[:, None]
        proj = (f - mean) @ comps.T
        lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
        hi = np.where(hi > lo, hi, lo + 1.0)
        self.pca = {"mean": mean.tolist(), "components": comps.tolist(), "lo": lo.tolist(), "hi": hi.tolist()}
        return self.pca

    def project(self, feats: np.ndarray) -> np.ndarray:
        """``(B, D, h, w)`` -> RGB ``(B, 3, h, w)`` in [0, 1]."""
        p = self.pca
        mean, comps = np.asarray(p["mean"], np.float32), np.asarray(p["components"], np.float32)
        lo, hi = np.asarray(p["lo"], np.float32), np.asarray(p["hi"], np.float32)
        proj = np.einsum("bdhw,kd->bkhw", feats - mean[None, :, None, None], comps)
        return np.clip((proj - lo[None, :, None, None]) / (hi - lo)[None, :, None, None], 0, 1).astype(np.float32)

    def run(self, model, x, bbox, tile_indices=None):
        """Returns ``(rgb (B, 3, h, w), mae_error (B,) or None)``."""
        rgb = self.project(self.features(model, x, bbox))
        err = None
        if self.mae:
            err = np.zeros(x.shape[0], np.float32)
            for b in range(x.shape[0]):
                # one fixed mask per tile: the score does not depend on batch composition or resumption
                seed = int(tile_indices[b]) if tile_indices is not None else b
                gen = torch.Generator(device=x.device).manual_seed(1_000_003 + seed)
                with torch.inference_mode():
                    out = model(x[b : b + 1], bbox[b : b + 1], generator=gen)
                err[b] = float(out["error"].float().mean())
        return rgb, err

    def owned_tokens(self, grid, i, j):
        """(token slice in the tile (ys, xs), output box (a0, a1, b0, b1)) of tile ``(i, j)``."""
        p = self.patch
        a0, a1, b0, b1 = grid.owned(i, j)
        oa, ob = -(-a1 // p) - a0 // p, -(-b1 // p) - b0 // p
        t0 = grid.overlap // 2 // p
        return (slice(t0, t0 + oa), slice(t0, t0 + ob)), (a0 // p, a0 // p + oa, b0 // p, b0 // p + ob)


def make_output(model, task: str, patch: int):
    card = getattr(model, "card", None)
    names = list(getattr(card, "class_names", None) or [])
    colors = list(getattr(card, "class_colors", None) or [])
    if task in ("segmentation", "classification"):
        if not names:
            k = getattr(model, "num_classes", None) or 2
            names = [f"class {i}" for i in range(k)]
        cls = SegmentationOutput if task == "segmentation" else ClassificationOutput
        return cls(names, colors)
    if task in ("encoder", "mae"):
        return FeatureOutput(patch, mae=task == "mae")
    raise ValueError(f"model task {task!r} cannot be predicted; use a segmentation, classification, encoder or MAE model.")
