"""Patch (un)folding and input checks shared by the encoder, the MAE and the heads."""

from __future__ import annotations

from torch import Tensor


def patchify(x: Tensor, patch_size: tuple[int, ...]) -> Tensor:
    """``x (B, L, C, *S)`` -> patches ``(B, L, n, prod(P)*C)``, row-major patches, channel fastest."""
    B, L, C = x.shape[:3]
    grid = [s // p for s, p in zip(x.shape[3:], patch_size)]
    nd = len(patch_size)
    split = [d for g, p in zip(grid, patch_size) for d in (g, p)]
    x = x.reshape(B, L, C, *split)
    grid_axes = [3 + 2 * i for i in range(nd)]
    patch_axes = [4 + 2 * i for i in range(nd)]
    x = x.permute(0, 1, *grid_axes, *patch_axes, 2)
    n = 1
    for g in grid:
        n *= g
    return x.reshape(B, L, n, -1)


def unpatchify(patches: Tensor, patch_size: tuple[int, ...], channels: int, spatial_shape) -> Tensor:
    """Inverse of :func:`patchify`: ``(B, L, n, prod(P)*C)`` -> images ``(B, L, C, *S)``."""
    B, L = patches.shape[:2]
    nd = len(patch_size)
    grid = [s // p for s, p in zip(spatial_shape, patch_size)]
    x = patches.reshape(B, L, *grid, *patch_size, channels)
    # axes now: B, L, g0..g{nd-1}, p0..p{nd-1}, C -> B, L, C, g0, p0, g1, p1, ...
    order = [0, 1, 2 + 2 * nd]
    for i in range(nd):
        order += [2 + i, 2 + nd + i]
    x = x.permute(*order)
    return x.reshape(B, L, channels, *spatial_shape)


def check_input(x: Tensor, encoder) -> Tensor:
    """Validate ``x (B, L, C, *S)`` against ``encoder`` and return it in the dtype of its weights."""
    nd = encoder.ndim
    axes = "(B, L, C, H, W)" if nd == 2 else "(B, L, C, D, H, W)"
    if not isinstance(x, Tensor):
        raise ValueError(f"The model input must be a torch tensor shaped {axes}, got {type(x).__name__}.")
    if x.ndim != 3 + nd:
        raise ValueError(
            f"This {nd}D model expects input shaped {axes} ({3 + nd} axes), got {x.ndim} axes {tuple(x.shape)}."
        )
    if x.shape[1] != len(encoder.levels):
        raise ValueError(
            f"The input has {x.shape[1]} levels (axis 1) but the model was built for "
            f"{len(encoder.levels)} levels {tuple(encoder.levels)}."
        )
    if x.shape[2] != encoder.in_channels:
        raise ValueError(
            f"The input has {x.shape[2]} channels (axis 2) but the model expects {encoder.in_channels}."
        )
    spatial = tuple(x.shape[3:])
    if any(s % p or s == 0 for s, p in zip(spatial, encoder.patch_size)):
        raise ValueError(
            f"The crop size {spatial} is not a positive multiple of the patch size {tuple(encoder.patch_size)}."
        )
    # match the weights' dtype (integer images, float64 arrays, a model cast to half precision)
    dtype = encoder.proj[0][0].weight.dtype
    return x if x.dtype == dtype else x.to(dtype)


def check_bbox(bbox: Tensor | None, batch: int, levels: int, ndim: int) -> None:
    """Raise ``ValueError`` unless ``bbox`` is None or shaped ``(B, L, 2, ndim)``."""
    if bbox is None:
        return
    expected = (batch, levels, 2, ndim)
    if not isinstance(bbox, Tensor) or tuple(bbox.shape) != expected:
        got = tuple(bbox.shape) if hasattr(bbox, "shape") else type(bbox).__name__
        raise ValueError(
            f"The world boxes (bbox) must be shaped {expected} = (batch, levels, min/max, axes), got {got}."
        )
