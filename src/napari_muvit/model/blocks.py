"""Transformer blocks of the MuViT encoder and MAE decoders (pre-norm, RoPE on q and k, level masks).

Module names mirror the reference checkpoint layout (``attn.to_q``, ``norm1``, ``ff.ff.0.0`` ...) so
a reference ``state_dict`` loads unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rope import apply_rope, make_axis_frequencies, rope_angles, rope_rotation, split_rope_dims

ATTENTION_MODES = ("all", "causal", "same")


def level_mask(level_q: Tensor, level_k: Tensor, mode: str) -> Tensor | None:
    """Boolean "may attend" mask ``(B, 1, Nq, Nk)`` (or ``(1, 1, Nq, Nk)``) from token level indices.

    ``level_q (B|1, Nq)``, ``level_k (B|1, Nk)``; ``all`` gives ``None`` (no mask).
    """
    if mode == "all":
        return None
    q = level_q[:, None, :, None]
    k = level_k[:, None, None, :]
    if mode == "causal":
        return q >= k
    if mode == "same":
        return q == k
    raise ValueError(f"attention_mode {mode!r} is not supported; use one of {', '.join(ATTENTION_MODES)}.")


class Attention(nn.Module):
    """Multi-head attention with bias-free q/k/v/out projections (out is identity for one head)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.dim_head = dim // heads
        self.scale = self.dim_head**-0.5
        self.dropout = dropout
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False) if heads > 1 else nn.Identity()

    def project_qkv(self, x: Tensor, rotation: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention inputs ``x (B, N, dim)`` -> ``q, k, v`` each ``(B, N, heads, dh)``, q and k rotated.

        ``softmax(q @ k^T * scale)`` per head (masked) are the attention weights of `forward`.
        """
        B, N, _ = x.shape
        # one GEMM for q, k and v is cheaper than three
        w = torch.cat([self.to_q.weight, self.to_k.weight, self.to_v.weight])
        qkv = F.linear(x, w).view(B, N, 3, self.heads, self.dim_head)
        if rotation is not None:
            q, k = apply_rope(qkv[:, :, :2], rotation.unsqueeze(2)).unbind(2)
        else:
            q, k = qkv[:, :, 0], qkv[:, :, 1]
        return q, k, qkv[:, :, 2]

    def forward(
        self,
        x: Tensor,
        rotation: Tensor | None = None,
        mask: Tensor | None = None,
        context: Tensor | None = None,
        context_rotation: Tensor | None = None,
        return_attention: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """``x (B, N, dim)`` -> ``(out (B, N, dim), attn (B, heads, N, Nk) or None)``.

        ``rotation (B, N, 1, dh/2)`` RoPE of the queries (and keys unless ``context`` is given,
        then ``context_rotation`` rotates the keys); ``mask`` boolean, True = may attend.
        """
        B, N, _ = x.shape
        h, dh = self.heads, self.dim_head
        if context is None:
            q, k, v = self.project_qkv(x, rotation)
        else:
            Nk = context.shape[1]
            q = self.to_q(x).view(B, N, h, dh)
            kv = F.linear(context, torch.cat([self.to_k.weight, self.to_v.weight])).view(B, Nk, 2, h, dh)
            k, v = kv[:, :, 0], kv[:, :, 1]
            if rotation is not None:
                q = apply_rope(q, rotation)
            if context_rotation is not None:
                k = apply_rope(k, context_rotation)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        p = self.dropout if self.training else 0.0
        if return_attention:
            logits = (q @ k.transpose(-1, -2)) * self.scale
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            attn = logits.softmax(dim=-1)
            out = F.dropout(attn, p) @ v
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        out = out.transpose(1, 2).reshape(B, N, h * dh)
        return self.to_out(out), attn


class FeedForward(nn.Module):
    """``Linear(dim, mult*dim)`` -> exact GELU -> dropout -> ``Linear(mult*dim, dim)``."""

    def __init__(self, dim: int, mult: int = 2, dropout: float = 0.0):
        super().__init__()
        inner = dim * mult
        self.ff = nn.Sequential(
            nn.Sequential(nn.Linear(dim, inner), nn.GELU()), nn.Dropout(dropout), nn.Linear(inner, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.ff(x)


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x += Attn(LN1(x))``, ``x += FF(LN2(x))``; RoPE frequencies own or shared."""

    def __init__(
        self,
        dim: int,
        heads: int,
        ndim: int,
        rotary: nn.ModuleList | None | str = "own",
        rotary_base: float = 10000,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.attn = Attention(dim, heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, 2, dropout)
        if isinstance(rotary, str):
            rotary = make_axis_frequencies(split_rope_dims(dim, heads, ndim), rotary_base, True)
        # a shared ModuleList is registered here too, as in the reference layout
        self.rotary_pos_embs = rotary

    def rotation(self, coords: Tensor | None) -> Tensor | None:
        """RoPE rotations ``(B, N, 1, dh/2)`` (complex; real ``(..., 2)`` off CPU/CUDA) for ``coords (B, N, ndim)``."""
        if coords is None or self.rotary_pos_embs is None:
            return None
        return rope_rotation(rope_angles(coords, self.rotary_pos_embs)).unsqueeze(2)

    def forward(
        self,
        x: Tensor,
        rotation: Tensor | None = None,
        mask: Tensor | None = None,
        context: Tensor | None = None,
        context_rotation: Tensor | None = None,
        return_attention: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """``x (B, N, dim)`` -> ``(x, attn or None)``; with ``context`` the attention is cross-attention."""
        a, attn = self.attn(self.norm1(x), rotation, mask, context, context_rotation, return_attention)
        x = x + a
        x = x + self.ff(self.norm2(x))
        return x, attn


def make_blocks(
    dim: int, heads: int, ndim: int, num_layers: int, rotary_mode: str, rotary_base: float, dropout: float
) -> tuple[nn.ModuleList | None, nn.ModuleList]:
    """``(shared frequencies or None, blocks)`` for a ``rotary_mode`` of ``per_layer``/``shared``/``fixed``/``none``.

    ``shared`` (trainable) and ``fixed`` (buffer) give every block the same frequency set, which the
    owner registers as ``rotary_pos_embs`` (reference checkpoint layout).
    """
    shared = None
    if rotary_mode in ("shared", "fixed"):
        shared = make_axis_frequencies(split_rope_dims(dim, heads, ndim), rotary_base, rotary_mode == "shared")
    block_rotary = {"per_layer": "own", "none": None}.get(rotary_mode, shared)
    layers = nn.ModuleList(
        [TransformerBlock(dim, heads, ndim, block_rotary, rotary_base, dropout) for _ in range(num_layers)]
    )
    return shared, layers


def layer_rotations(layers: nn.ModuleList, coords: Tensor | None) -> list[Tensor | None]:
    """RoPE rotation of ``coords`` for every block, computed once per distinct frequency set."""
    cache: dict[int, Tensor | None] = {}
    out = []
    for layer in layers:
        key = id(layer.rotary_pos_embs)
        if key not in cache:
            cache[key] = layer.rotation(coords)
        out.append(cache[key])
    return out
