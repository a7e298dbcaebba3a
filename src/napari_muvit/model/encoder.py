"""MuViT encoder: per-level patch projections + one transformer over the tokens of all levels.

Positions are rotary embeddings of **world coordinates** (level-1 pixel units), so one physical spot
has the same positional code at every level. Checkpoint-compatible with the reference package.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from .blocks import ATTENTION_MODES, layer_rotations, level_mask, make_blocks
from .patches import check_bbox, check_input, patchify

ROTARY_MODES = ("per_layer", "shared", "fixed", "none")


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; use one of {', '.join(map(repr, allowed))}.")


class MuViTEncoder(nn.Module):
    """Multi-resolution ViT encoder for ``L`` nested crops of equal pixel size, one per level.

    Args mirror the reference ``config.yaml`` keys; ``levels`` are downsample factors (e.g. ``(1, 8, 32)``),
    ``patch_size`` an int or one int per spatial axis, ``ndim`` 2 (``(H, W)`` crops) or 3 (``(D, H, W)``).
    Tokens are ordered level-major, row-major inside a level: ``N = L * prod(S // P)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        levels: tuple = (1, 4),
        patch_size: int | tuple[int, ...] = 16,
        num_layers: int = 6,
        dim: int = 320,
        heads: int = 4,
        dropout: float = 0.0,
        attention_mode: str = "all",
        rotary_mode: str = "per_layer",
        rotary_base: float = 10000,
        use_level_embed: bool = True,
        input_space: str = "real",
        ndim: int = 2,
    ):
        super().__init__()
        _choice("ndim", ndim, (2, 3))
        _choice("attention_mode", attention_mode, ATTENTION_MODES)
        _choice("rotary_mode", rotary_mode, ROTARY_MODES)
        _choice("input_space", input_space, ("real",))
        levels = tuple(levels)
        if not levels or any(lv <= 0 for lv in levels) or len(set(levels)) != len(levels):
            raise ValueError(f"levels={levels!r} must be distinct positive downsample factors such as (1, 8, 32).")
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}.")
        self.ndim = ndim
        self.levels = levels
        self.patch_size = tuple(patch_size) if isinstance(patch_size, (tuple, list)) else (int(patch_size),) * ndim
        if len(self.patch_size) != ndim:
            raise ValueError(f"patch_size={patch_size!r} needs one value per spatial axis ({ndim}).")
        self.in_channels = in_channels
        self.dim = dim
        self.heads = heads
        self.num_layers = num_layers
        self.attention_mode = attention_mode
        self.rotary_mode = rotary_mode
        self._config = dict(
            attention_mode=attention_mode,
            dim=dim,
            dropout=dropout,
            heads=heads,
            in_channels=in_channels,
            input_space=input_space,
            levels=levels,
            ndim=ndim,
            num_layers=num_layers,
            patch_size=tuple(patch_size) if isinstance(patch_size, (tuple, list)) else patch_size,
            rotary_base=rotary_base,
            rotary_mode=rotary_mode,
            use_level_embed=use_level_embed,
        )
        self.card = None

        patch_dim = in_channels * math.prod(self.patch_size)
        self.proj = nn.ModuleList(
            [nn.Sequential(nn.Linear(patch_dim, dim), nn.LayerNorm(dim)) for _ in levels]
        )
        self.level_embed = nn.Parameter(torch.randn(len(levels), 1, 1, dim)) if use_level_embed else None

        shared, self.layers = make_blocks(dim, heads, ndim, num_layers, rotary_mode, rotary_base, dropout)
        if shared is not None:
            self.rotary_pos_embs = shared

    # -- configuration -------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        """Constructor arguments with the reference ``config.yaml`` keys (``levels`` a tuple)."""
        return dict(self._config)

    @property
    def encoder(self) -> MuViTEncoder:
        """The encoder itself, so every loaded model exposes ``.encoder``."""
        return self

    def grid_shape(self, spatial_shape) -> tuple[int, ...]:
        """Token grid per level ``(h, w)`` / ``(d, h, w)`` for a crop of ``spatial_shape`` pixels."""
        return tuple(int(s) // p for s, p in zip(spatial_shape, self.patch_size))

    # -- geometry ------------------------------------------------------------------------------
    def default_bbox(self, spatial_shape, batch_size: int = 1) -> Tensor:
        """Boxes ``(B, L, 2, ndim)`` centred on 0 with half-extent ``level * (S/2 - 0.5)`` (world px)."""
        half = [[lv * (s / 2 - 0.5) for s in spatial_shape] for lv in self.levels]
        half = torch.tensor(half, dtype=torch.float32)
        return torch.stack([-half, half], dim=1).unsqueeze(0).expand(batch_size, -1, -1, -1)

    def patch_coords(self, bbox: Tensor | None, spatial_shape, batch_size: int = 1) -> Tensor:
        """World coordinate ``(B, N, ndim)`` of every token.

        Per level an endpoint-inclusive grid spans the box: first patch on ``bbox[:, l, 0]``, last on
        ``bbox[:, l, 1]``. ``spatial_shape`` is the crop's pixel shape; ``bbox=None`` uses ``default_bbox``.
        """
        grid = self.grid_shape(spatial_shape)
        if bbox is None:
            bbox = self.default_bbox(spatial_shape, batch_size)
        if not torch.is_floating_point(bbox):
            bbox = bbox.float()
        B, L = bbox.shape[:2]
        axes = [torch.linspace(0, 1, g, device=bbox.device) for g in grid]
        unit = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, self.ndim)
        lo, hi = bbox[:, :, 0, None, :], bbox[:, :, 1, None, :]
        coords = lo + unit * (hi - lo)  # (B, L, n, ndim)
        return coords.reshape(B, L * unit.shape[0], self.ndim)

    def level_index(self, spatial_shape, device=None) -> Tensor:
        """Level index ``(N,)`` (0 = ``levels[0]``) of every token, level-major order."""
        n = math.prod(self.grid_shape(spatial_shape))
        return torch.arange(len(self.levels), device=device).repeat_interleave(n)

    # -- forward -------------------------------------------------------------------------------
    def embed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x (B, L, C, *S)`` -> ``(tokens (B, N, dim), patches (B, N, C*prod(P)))`` before the blocks."""
        patches = patchify(x, self.patch_size)  # (B, L, n, P*P*C)
        tokens = []
        for li, proj in enumerate(self.proj):
            t = proj(patches[:, li])
            if self.level_embed is not None:
                t = t + self.level_embed[li]
            tokens.append(t)
        return torch.cat(tokens, dim=1), patches.flatten(1, 2)

    def rotations(self, coords: Tensor) -> list[Tensor | None]:
        """Per-layer complex RoPE rotations, computed once per distinct frequency set."""
        return layer_rotations(self.layers, coords)

    def run_blocks(
        self, tokens: Tensor, coords: Tensor, level_idx: Tensor, return_attention: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """Transformer over ``tokens (B, N, dim)`` at ``coords (B, N, ndim)``, ``level_idx (B|1, N)``."""
        mask = level_mask(level_idx, level_idx, self.attention_mode)
        attns = []
        for layer, rot in zip(self.layers, self.rotations(coords)):
            tokens, attn = layer(tokens, rot, mask, return_attention=return_attention)
            if return_attention:
                attns.append(attn)
        return tokens, attns

    def forward(self, x: Tensor, bbox: Tensor | None = None, return_attention: bool = False):
        """``x (B, L, C, *S)``, ``bbox (B, L, 2, ndim)`` world px or None -> tokens ``(B, N, dim)``.

        With ``return_attention=True`` returns ``(tokens, attn)``, ``attn`` a list over layers of
        ``(B, heads, N, N)`` softmax weights (explicit, slower path; tokens match the fused path).
        """
        x = check_input(x, self)
        spatial = x.shape[3:]
        check_bbox(bbox, x.shape[0], len(self.levels), self.ndim)
        tokens, _ = self.embed(x)
        coords = self.patch_coords(bbox, spatial, x.shape[0]).to(x.device)
        level_idx = self.level_index(spatial, x.device)[None]
        tokens, attns = self.run_blocks(tokens, coords, level_idx, return_attention)
        return (tokens, attns) if return_attention else tokens

    def attention_qk(self, x: Tensor, bbox: Tensor | None = None) -> tuple[Tensor, list[tuple[Tensor, Tensor]], Tensor]:
        """Tokens plus every layer's rotated queries and keys, so attention rows can be computed on demand.

        ``x (B, L, C, *S)``, ``bbox (B, L, 2, ndim)`` -> ``(tokens (B, N, dim), [(q, k)] per layer, each
        (B, heads, N, dh), level_idx (N,))``. Per head ``softmax(q @ k^T * dh**-0.5)``, masked by
        ``level_mask(level_idx, level_idx, attention_mode)``, equals ``forward(..., return_attention=True)``'s
        weights; keeping q and k costs ``2 * N * dim`` floats per layer instead of ``heads * N^2``.
        Tokens come from the fused path (q and k are projected once more for the capture).
        """
        x = check_input(x, self)
        spatial = x.shape[3:]
        check_bbox(bbox, x.shape[0], len(self.levels), self.ndim)
        tokens, _ = self.embed(x)
        coords = self.patch_coords(bbox, spatial, x.shape[0]).to(x.device)
        level_idx = self.level_index(spatial, x.device)
        mask = level_mask(level_idx[None], level_idx[None], self.attention_mode)
        qk = []
        for layer, rot in zip(self.layers, self.rotations(coords)):
            q, k, _ = layer.attn.project_qkv(layer.norm1(tokens), rot)
            qk.append((q.transpose(1, 2), k.transpose(1, 2)))
            tokens, _ = layer(tokens, rot, mask)
        return tokens, qk, level_idx

    def spatial_features(self, x: Tensor, bbox: Tensor | None = None) -> Tensor:
        """Tokens as feature maps ``(B, L, dim, h, w)`` (3D: ``(B, L, dim, d, h, w)``)."""
        tokens = self(x, bbox)
        grid = self.grid_shape(x.shape[3:])
        return tokens.view(x.shape[0], len(self.levels), *grid, self.dim).movedim(-1, 2)

    def extract_levels(self, levels) -> MuViTEncoder:
        """A new encoder for a subset of ``levels`` (copies their projections/embeddings and the blocks)."""
        levels = tuple(levels)
        missing = [lv for lv in levels if lv not in self.levels]
        if missing or not levels:
            raise ValueError(f"levels {levels!r} are not a subset of this encoder's levels {self.levels!r}.")
        cfg = self.config
        cfg["levels"] = levels
        new = type(self)(**cfg).to(next(self.parameters()).device)
        for new_i, lv in enumerate(levels):
            old_i = self.levels.index(lv)
            new.proj[new_i].load_state_dict(self.proj[old_i].state_dict())
            if self.level_embed is not None:
                new.level_embed.data[new_i] = self.level_embed.data[old_i]
        new.layers.load_state_dict(copy.deepcopy(self.layers.state_dict()))
        if hasattr(self, "rotary_pos_embs"):
            new.rotary_pos_embs.load_state_dict(self.rotary_pos_embs.state_dict())
        return new
