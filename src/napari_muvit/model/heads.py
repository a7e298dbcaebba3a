"""Downstream heads on a MuViT encoder: dense segmentation (UNETR-style or probe) and tile classification.

Segmentation predicts the **finest level's crop** (``levels[0]``). Coarse levels' feature maps are
resampled at the world coordinates of the finest token grid (their boxes say where each coarse token
lies), so every fine token sees the context feature of the same physical spot.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoder import MuViTEncoder
from .patches import check_bbox, check_input


def fuse_levels(feats: Tensor, bbox: Tensor | None, encoder: MuViTEncoder, spatial_shape) -> Tensor:
    """Stack every level's features on the finest token grid.

    ``feats (B, L, dim, h, w)`` -> ``(B, L*dim, h, w)``: level 0 as is, level ``l`` bilinearly sampled
    (border-clamped) at the world positions of level 0's tokens using the boxes ``bbox (B, L, 2, 2)``.
    """
    B, L, D, h, w = feats.shape
    if bbox is None:
        bbox = encoder.default_bbox(spatial_shape, B)
    bbox = bbox.to(feats.device, torch.float32)
    out = [feats[:, 0]]
    if L > 1:
        fine = encoder.patch_coords(bbox[:, :1], spatial_shape, B).view(B, 1, h * w, 2)  # world (y, x)
        lo, hi = bbox[:, 1:, 0, None, :], bbox[:, 1:, 1, None, :]  # (B, L-1, 1, 2)
        # coarse token grids are endpoint-inclusive over their box: align_corners=True maps [-1, 1] onto it
        norm = 2 * (fine - lo) / (hi - lo).clamp_min(1e-6) - 1  # (B, L-1, h*w, 2)
        grid = norm.flip(-1).reshape(B * (L - 1), h, w, 2)  # grid_sample wants (x, y)
        coarse = feats[:, 1:].reshape(B * (L - 1), D, h, w)
        sampled = F.grid_sample(coarse, grid, mode="bilinear", padding_mode="border", align_corners=True)
        out.append(sampled.reshape(B, (L - 1) * D, h, w))
    return torch.cat(out, dim=1)


class TokenProbe(nn.Module):
    """Per-token linear layer (``hidden=0``) or small MLP on fused features ``(B, L*dim, h, w)`` -> ``(B, K, h, w)``."""

    def __init__(self, dim: int, levels, num_classes: int, hidden: int = 0):
        super().__init__()
        cin = dim * len(tuple(levels))
        if hidden:
            self.net = nn.Sequential(nn.Conv2d(cin, hidden, 1), nn.GELU(), nn.Conv2d(hidden, num_classes, 1))
        else:
            self.net = nn.Sequential(nn.Conv2d(cin, num_classes, 1))

    def forward(self, fused: Tensor, image: Tensor | None = None) -> Tensor:
        return self.net(fused)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(1, cout), nn.GELU())


class UNETRHead(nn.Module):
    """Progressive x2 upsampling decoder from the token grid to pixels, with a skip from the raw image.

    ``fused (B, L*dim, h, w)`` -> 1x1 conv to ``width`` -> ``log2(P)`` steps (transposed conv x2 + conv,
    halving channels down to ``min_width``) -> concat conv features of the finest image ``(B, C, S, S)``
    -> conv -> 1x1 to ``K``. Output ``(B, K, S, S)``.
    """

    def __init__(self, dim: int, levels, num_classes: int, in_channels: int, patch_size: int,
                 width: int = 64, min_width: int = 16, skip_channels: int = 16):
        super().__init__()
        steps = int(round(math.log2(patch_size)))
        if 2**steps != patch_size:
            raise ValueError(f"The UNETR head needs a power-of-two patch size, got {patch_size}.")
        self.reduce = nn.Sequential(nn.Conv2d(dim * len(tuple(levels)), width, 1), nn.GroupNorm(1, width), nn.GELU())
        ups, c = [], width
        for _ in range(steps):
            cout = max(c // 2, min_width)
            ups.append(nn.Sequential(nn.ConvTranspose2d(c, cout, 2, stride=2), _conv_block(cout, cout)))
            c = cout
        self.up = nn.ModuleList(ups)
        self.skip = _conv_block(in_channels, skip_channels)
        self.fuse = _conv_block(c + skip_channels, c)
        self.out = nn.Conv2d(c, num_classes, 1)

    def forward(self, fused: Tensor, image: Tensor) -> Tensor:
        y = self.reduce(fused)
        for up in self.up:
            y = up(y)
        y = self.fuse(torch.cat([y, self.skip(image)], dim=1))
        return self.out(y)


class _EncoderWithHead(nn.Module):
    """An encoder plus a head; the encoder can be frozen (no gradients, eval mode, ``no_grad`` features)."""

    def __init__(self, encoder: MuViTEncoder):
        super().__init__()
        self.encoder = encoder
        self.card = None
        self.encoder_frozen = False

    def freeze_encoder(self, frozen: bool = True) -> None:
        """Freeze or unfreeze the encoder's parameters."""
        self.encoder_frozen = bool(frozen)
        for p in self.encoder.parameters():
            p.requires_grad_(not frozen)
        if frozen:
            self.encoder.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def _encoder_grad(self):
        return torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder_frozen)


class MuViTSegmenter(_EncoderWithHead):
    """Dense segmentation of the finest crop: ``forward(x (B, L, C, S, S), bbox)`` -> logits ``(B, K, S, S)``.

    ``head="unetr"`` (trainable decoder, encoder fine-tuned unless ``freeze_encoder``) or ``"probe"``
    (:class:`TokenProbe` on frozen features, bilinearly upsampled; ``hidden`` > 0 makes it an MLP).
    State dict keys: ``encoder.*`` and ``head.*``. 2D encoders only.
    """

    task = "segmentation"

    def __init__(self, encoder: MuViTEncoder, num_classes: int, head: str = "unetr",
                 freeze_encoder: bool | None = None, hidden: int = 0, width: int = 64,
                 min_width: int = 16, skip_channels: int = 16):
        if encoder.ndim != 2:
            raise ValueError("MuViTSegmenter supports 2D encoders only; this encoder is 3D.")
        if head not in ("unetr", "probe"):
            raise ValueError(f"head={head!r} is not supported; use 'unetr' or 'probe'.")
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}.")
        super().__init__(encoder)
        self.num_classes = num_classes
        self.head_type = head
        self._head_args = dict(head=head, hidden=hidden, width=width, min_width=min_width,
                               skip_channels=skip_channels)
        if head == "probe":
            self.head = TokenProbe(encoder.dim, encoder.levels, num_classes, hidden)
        else:
            if len(set(encoder.patch_size)) != 1:
                raise ValueError(f"The UNETR head needs a square patch size, got {encoder.patch_size}.")
            self.head = UNETRHead(encoder.dim, encoder.levels, num_classes, encoder.in_channels,
                                  encoder.patch_size[0], width, min_width, skip_channels)
        self.freeze_encoder(head == "probe" if freeze_encoder is None else freeze_encoder)

    @property
    def head_config(self) -> dict:
        """Arguments that rebuild this head: ``MuViTSegmenter(encoder, **head_config)``."""
        return dict(num_classes=self.num_classes, freeze_encoder=self.encoder_frozen, **self._head_args)

    def features(self, x: Tensor, bbox: Tensor | None = None) -> Tensor:
        """Fused multi-level features on the finest token grid ``(B, L*dim, h, w)``."""
        x = check_input(x, self.encoder)
        check_bbox(bbox, x.shape[0], len(self.encoder.levels), 2)
        with self._encoder_grad():
            feats = self.encoder.spatial_features(x, bbox)
        return fuse_levels(feats, bbox, self.encoder, x.shape[3:])

    def head_forward(self, fused: Tensor, x: Tensor) -> Tensor:
        """Logits ``(B, K, S, S)`` from precomputed ``fused`` features and the input ``x (B, L, C, S, S)``."""
        if self.head_type == "probe":
            logits = self.head(fused)
            return F.interpolate(logits, size=tuple(x.shape[3:]), mode="bilinear", align_corners=False)
        return self.head(fused, x[:, 0].to(fused.dtype))

    def forward(self, x: Tensor, bbox: Tensor | None = None) -> Tensor:
        x = check_input(x, self.encoder)
        return self.head_forward(self.features(x, bbox), x)


class MuViTClassifier(_EncoderWithHead):
    """Tile classifier: per-level mean of tokens, concatenated ``(B, L*dim)`` -> MLP -> logits ``(B, K)``."""

    task = "classification"

    def __init__(self, encoder: MuViTEncoder, num_classes: int, hidden: int = 256, freeze_encoder: bool = False):
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}.")
        super().__init__(encoder)
        self.num_classes = num_classes
        self.hidden = hidden
        cin = encoder.dim * len(encoder.levels)
        self.head = nn.Sequential(nn.LayerNorm(cin), nn.Linear(cin, hidden), nn.GELU(), nn.Linear(hidden, num_classes))
        self.freeze_encoder(freeze_encoder)

    @property
    def head_config(self) -> dict:
        return dict(num_classes=self.num_classes, hidden=self.hidden, freeze_encoder=self.encoder_frozen)

    def pooled(self, x: Tensor, bbox: Tensor | None = None) -> Tensor:
        """Per-level mean tokens concatenated ``(B, L*dim)``."""
        with self._encoder_grad():
            tokens = self.encoder(x, bbox)
        B, L = tokens.shape[0], len(self.encoder.levels)
        return tokens.view(B, L, -1, self.encoder.dim).mean(dim=2).flatten(1)

    def forward(self, x: Tensor, bbox: Tensor | None = None) -> Tensor:
        return self.head(self.pooled(x, bbox))
