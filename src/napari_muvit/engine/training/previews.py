"""Reconstruction previews of the MAE: input, masked input and reconstruction for each level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def mask_to_pixels(mask: np.ndarray, levels: int, grid: tuple[int, int], patch: tuple[int, int]) -> np.ndarray:
    """Token mask ``(N,)`` (True = masked, level-major, row-major) -> pixel mask ``(L, H, W)``."""
    m = mask.reshape(levels, *grid)
    return np.repeat(np.repeat(m, patch[0], axis=1), patch[1], axis=2)


@torch.no_grad()
def save_preview(mae, img: torch.Tensor, bbox: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """Run ``mae`` on ``img (B, L, C, S, S)`` and save a PNG grid (rows = sample x level).

    Columns: input, masked input (masked patches grey), reconstruction of the masked patches pasted into
    the visible ones. Uses a forked torch RNG so training randomness is not consumed.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    was_training = mae.training
    mae.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        out = mae(img, bbox)
    mae.train(was_training)
    x = img.float().cpu().numpy()
    pred = out["pred"].float().cpu().numpy()
    mask = out["mask"].cpu().numpy()
    b, L = x.shape[:2]
    enc = mae.encoder
    size = x.shape[-2:]
    grid = tuple(s // p for s, p in zip(size, enc.patch_size))
    fig = Figure(figsize=(6, 2 * b * L), dpi=80)
    for i in range(b):
        pix = mask_to_pixels(mask[i], L, grid, enc.patch_size)
        for j in range(L):
            inp = x[i, j, 0]
            masked = np.where(pix[j], np.nan, inp)
            rec = np.where(pix[j], pred[i, j, 0], inp)
            lo, hi = np.percentile(inp, [1, 99])
            for k, (im, name) in enumerate(((inp, "input"), (masked, "masked"), (rec, "reconstruction"))):
                ax = fig.add_subplot(b * L, 3, (i * L + j) * 3 + k + 1)
                ax.imshow(im, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
                ax.set_xticks([])
                ax.set_yticks([])
                if k == 0:
                    ax.set_ylabel(f"level {enc.levels[j]}")
                if i == 0 and j == 0:
                    ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
