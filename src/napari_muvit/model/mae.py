"""Multi-resolution masked autoencoder (MR-MAE): mask most tokens of all levels, reconstruct the masked patches."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import layer_rotations, make_blocks
from .encoder import MuViTEncoder
from .masking import indices_from_mask, level_ratio_masking, sample_masking
from .patches import check_bbox, check_input, unpatchify

DECODER_MODES = ("multi", "single", "multi_iso")
LOSSES = ("mse", "norm_mse")


class MaeDecoder(nn.Module):
    """``Linear(dim_in, dim)`` -> GELU -> LayerNorm, then transformer blocks (first may cross-attend)."""

    def __init__(self, dim_in: int, dim: int, num_layers: int, heads: int, ndim: int,
                 rotary_mode: str, rotary_base: float, dropout: float):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(dim_in, dim), nn.GELU(), nn.LayerNorm(dim))
        shared, self.layers = make_blocks(dim, heads, ndim, num_layers, rotary_mode, rotary_base, dropout)
        if shared is not None:
            self.rotary_pos_embs = shared

    def forward(self, x: Tensor, coords: Tensor, context: Tensor | None = None,
                context_coords: Tensor | None = None) -> Tensor:
        """``x (B, n, dim_in)`` at ``coords (B, n, ndim)``; the first layer attends to ``context`` if given."""
        x = self.proj(x)
        if context is not None:
            context = self.proj(context)
        for i, (layer, rot) in enumerate(zip(self.layers, layer_rotations(self.layers, coords))):
            if i == 0 and context is not None:
                x, _ = layer(x, rot, None, context, layer.rotation(context_coords))
            else:
                x, _ = layer(x, rot)
        return x


class MuViTMAE(nn.Module):
    """MR-MAE around a :class:`MuViTEncoder`; constructor arguments are the reference ``config.yaml`` keys.

    ``forward(x (B, L, C, *S), bbox, mask_indices=None)`` returns a dict:
    ``loss`` scalar, ``pred`` reconstructions ``(B, L, C, *S)`` (every patch predicted),
    ``reco`` input with the masked patches replaced by predictions, ``mask (B, N)`` bool (True = masked),
    ``error (B,)`` per-sample masked-patch MSE in loss space (``loss == error.mean()``),
    ``pred_patches (B, N, C*prod(P))`` raw predictions in loss space, ``idx`` and ``n_keep`` (the masking used).
    """

    task = "mae"

    def __init__(
        self,
        in_channels: int = 1,
        levels: tuple = (1, 4),
        patch_size: int | tuple[int, ...] = 16,
        num_layers: int = 12,
        dim: int = 512,
        num_layers_decoder: int = 2,
        dim_decoder: int | None = 256,
        heads: int = 8,
        decoder_mode: str = "multi",
        loss: str = "mse",
        masking_ratio: float = 0.75,
        use_level_embed: bool = True,
        rotary_mode: str = "per_layer",
        rotary_base: float = 10000,
        attention_mode: str = "all",
        masking_mode="dirichlet",
        input_space: str = "real",
        dropout: float = 0.0,
        ndim: int = 2,
    ):
        super().__init__()
        if decoder_mode not in DECODER_MODES:
            raise ValueError(f"decoder_mode={decoder_mode!r} is not supported; use one of {', '.join(DECODER_MODES)}.")
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r} is not supported; use 'mse' or 'norm_mse'.")
        if not 0 <= masking_ratio < 1:
            raise ValueError(f"masking_ratio={masking_ratio} must be in [0, 1).")
        dim_decoder = dim if dim_decoder is None else dim_decoder
        self.encoder = MuViTEncoder(
            in_channels=in_channels, levels=levels, patch_size=patch_size, num_layers=num_layers, dim=dim,
            heads=heads, dropout=dropout, attention_mode=attention_mode, rotary_mode=rotary_mode,
            rotary_base=rotary_base, use_level_embed=use_level_embed, input_space=input_space, ndim=ndim,
        )
        L = len(self.encoder.levels)
        self.ndim = ndim
        self.decoder_mode = decoder_mode
        self.loss_fn = loss
        self.masking_ratio = masking_ratio
        self.masking_mode = tuple(masking_mode) if isinstance(masking_mode, list) else masking_mode
        self.level_ratios = None  # optional fixed per-level masking ratios, overrides masking_mode
        self.card = None
        self._config = dict(self.encoder.config)
        self._config.update(decoder_mode=decoder_mode, dim_decoder=dim_decoder, loss=loss,
                            masking_mode=self.masking_mode, masking_ratio=masking_ratio,
                            num_layers_decoder=num_layers_decoder)
        patch_dim = in_channels * math.prod(self.encoder.patch_size)
        self.final = nn.Linear(dim_decoder, patch_dim)
        args = (dim, dim_decoder, num_layers_decoder, heads, ndim, rotary_mode, rotary_base, dropout)
        if decoder_mode == "single":
            self.mask_token = nn.Parameter(torch.randn(1, 1, dim))
            self.decoder = MaeDecoder(*args)
        else:
            self.mask_token = nn.Parameter(torch.randn(1, L, dim))
            self.decoder = nn.ModuleList([MaeDecoder(*args) for _ in range(L)])

    @property
    def config(self) -> dict:
        """Constructor arguments with the reference ``config.yaml`` keys."""
        return dict(self._config)

    def masking(self, B: int, n: int, device, mask_indices=None, generator=None) -> tuple[Tensor, int]:
        """``(idx (B, N), n_keep)``: injected ``mask_indices`` (bool mask or permutation) or a fresh draw."""
        L = len(self.encoder.levels)
        N = L * n
        if mask_indices is not None:
            mi = torch.as_tensor(mask_indices, device=device)
            if tuple(mi.shape) != (B, N):
                raise ValueError(f"mask_indices must be shaped {(B, N)} (batch, tokens), got {tuple(mi.shape)}.")
            if mi.dtype == torch.bool:
                return indices_from_mask(mi)
            return mi.long(), int(N * (1 - self.masking_ratio))
        if self.level_ratios is not None:
            return level_ratio_masking(B, L, n, self.level_ratios, device, generator)
        return sample_masking(B, L, n, self.masking_ratio, self.masking_mode, device, generator)

    def decode(self, z: Tensor, coords: Tensor, n: int) -> Tensor:
        """Decoder over the full token sequence ``z (B, N, dim)`` -> predictions ``(B, N, C*prod(P))``."""
        if self.decoder_mode == "single":
            out = self.decoder(z, coords)
        else:
            zs, cs = torch.split(z, n, dim=1), torch.split(coords, n, dim=1)
            if self.decoder_mode == "multi":
                out = torch.cat([d(zi, ci, z, coords) for d, zi, ci in zip(self.decoder, zs, cs)], dim=1)
            else:
                out = torch.cat([d(zi, ci) for d, zi, ci in zip(self.decoder, zs, cs)], dim=1)
        return self.final(out)

    def forward(self, x: Tensor, bbox: Tensor | None = None, mask_indices=None, generator=None,
                eps: float = 1e-2) -> dict:
        enc = self.encoder
        x = check_input(x, enc)
        B, spatial = x.shape[0], tuple(x.shape[3:])
        check_bbox(bbox, B, len(enc.levels), enc.ndim)
        tokens, patches = enc.embed(x)
        N = tokens.shape[1]
        n = N // len(enc.levels)
        coords = enc.patch_coords(bbox, spatial, B).to(x.device)
        level_idx = enc.level_index(spatial, x.device)
        idx, n_keep = self.masking(B, n, x.device, mask_indices, generator)
        keep, masked = idx[:, :n_keep], idx[:, n_keep:]
        rows = torch.arange(B, device=x.device)[:, None]

        visible, _ = enc.run_blocks(tokens[rows, keep], coords[rows, keep], level_idx[keep])

        if self.decoder_mode == "single":
            z = self.mask_token.expand(B, N, -1).clone()
        else:
            z = self.mask_token[0, level_idx].expand(B, -1, -1).clone()
        z[rows, keep] = visible.to(z.dtype)
        pred = self.decode(z, coords, n)

        if self.loss_fn == "norm_mse":
            mean, std = patches.mean(-1, keepdim=True), patches.std(-1, keepdim=True)
        else:
            mean = torch.tensor(0.0, dtype=patches.dtype, device=x.device)
            std = torch.tensor(1 - eps, dtype=patches.dtype, device=x.device)
        target = (patches - mean) / (std + eps)
        sq = (pred[rows, masked] - target[rows, masked]).pow(2)
        error = sq.flatten(1).mean(1) if masked.shape[1] else torch.zeros(B, device=x.device)
        loss = F.mse_loss(pred[rows, masked], target[rows, masked]) if masked.shape[1] else error.sum()

        mask = torch.zeros(B, N, dtype=torch.bool, device=x.device)
        mask[rows, masked] = True
        pixels = pred * (std + eps) + mean
        reco = torch.where(mask[..., None], pixels, patches)
        L, C = len(enc.levels), enc.in_channels
        to_image = lambda p: unpatchify(p.view(B, L, n, -1), enc.patch_size, C, spatial)  # noqa: E731
        return dict(loss=loss, pred=to_image(pixels), reco=to_image(reco), mask=mask, error=error,
                    pred_patches=pred, idx=idx, n_keep=n_keep)
