"""Rotary position embeddings (RoPE) of world coordinates, one frequency set per spatial axis.

The head dimension is split across axes (y first, or z in 3D); each axis rotates its share of the
head dims by ``angle = world_coordinate * inv_freq`` on interleaved pairs ``(t[2i], t[2i+1])``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def split_rope_dims(dim: int, heads: int, ndim: int) -> list[int]:
    """Head dims per spatial axis: every axis but the first gets an even ``dh // ndim``, the first the rest.

    Raises ``ValueError`` when a share is 8 or less (too few frequencies to encode a position).
    """
    dim_head = dim // heads
    others = [2 * ((dim_head // ndim) // 2)] * (ndim - 1)
    dims = [dim_head - sum(others), *others]
    if min(dims) <= 8:
        raise ValueError(
            f"dim={dim} with heads={heads} leaves only {min(dims)} rotary dims for one of the {ndim} axes; "
            f"choose dim // heads of at least {10 * ndim} (every axis needs more than 8)."
        )
    return dims


class AxisFrequencies(nn.Module):
    """Frequencies ``inv_freq (d_axis/2,)`` of one axis; a parameter when trainable, else a buffer.

    Initialised as ``base**(-2k/d_axis)``; checkpoints store the (possibly trained) values.
    """

    def __init__(self, dim: int, base: float = 10000, trainable: bool = True):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        if trainable:
            self.inv_freq = nn.Parameter(inv_freq)
        else:
            self.register_buffer("inv_freq", inv_freq)


def make_axis_frequencies(dims: list[int], base: float, trainable: bool) -> nn.ModuleList:
    return nn.ModuleList([AxisFrequencies(d, base, trainable) for d in dims])


def rope_angles(coords: Tensor, freqs: nn.ModuleList) -> Tensor:
    """Rotation angles ``(B, N, dh/2)`` fp32 for world ``coords (B, N, ndim)``, axes concatenated in order."""
    coords = coords.float()
    return torch.cat([coords[..., a : a + 1] * f.inv_freq for a, f in enumerate(freqs)], dim=-1)


def rope_rotation(angles: Tensor) -> Tensor:
    """Rotations for ``angles (..., dh/2)``: complex ``exp(i angle)`` (complex64) on CPU and CUDA;
    elsewhere (e.g. Apple MPS, with limited complex support) real ``(..., dh/2, 2)`` = ``(cos, sin)``."""
    if angles.device.type in ("cpu", "cuda"):
        return torch.polar(torch.ones_like(angles), angles)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def apply_rope(t: Tensor, rotation: Tensor) -> Tensor:
    """Rotate interleaved pairs of ``t (..., N, heads, dh)`` by ``rotation (..., N, 1, dh/2)`` in fp32.

    Pair ``(t[2i], t[2i+1])`` read as the complex number ``t[2i] + i t[2i+1]`` and multiplied by
    ``exp(i angle)`` gives exactly ``(t0 cos - t1 sin, t1 cos + t0 sin)`` (GPT-J form).
    """
    dtype = t.dtype
    pairs = t.float().reshape(*t.shape[:-1], -1, 2)
    if rotation.is_complex():
        return torch.view_as_real(torch.view_as_complex(pairs) * rotation).flatten(-2).to(dtype)
    cos, sin = rotation[..., 0], rotation[..., 1]
    t0, t1 = pairs[..., 0], pairs[..., 1]
    return torch.stack([t0 * cos - t1 * sin, t1 * cos + t0 * sin], dim=-1).flatten(-2).to(dtype)
