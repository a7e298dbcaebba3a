"""Every layer's head-mean attention of one tile in one byte per weight, for rollout as vector-matrix products.

Rollout needs whole matrices: after one layer the query's row vector is dense, so ``v <- v @ R_i`` touches
every row of every layer's ``R_i = (A_i + I) / 2`` (``A_i`` the head mean of layer ``i``'s weights). Rebuilding
``A_i`` from q and k on each click costs ``heads * N^2 * dh`` multiply-adds and ``heads * N^2`` exponentials
per layer (5 s for the paper-sized encoder on one CPU core); keeping ``A_i`` in float32 costs ``4 * layers * N^2``
bytes (453 MB at N = 3072, 12 layers). This keeps each ``A_i`` once, as 8-bit codes:

- Row ``a`` of ``A_i`` (non-negative, sums to 1) is divided by its maximum, ``r = a / max(a)`` in ``[0, 1]``,
  and each ``r_j`` is rounded to the nearest number with 4 exponent and 4 mantissa bits: the float32 bit
  pattern of ``r_j`` rounded to its top 13 bits (sign 0, 8 exponent, 4 mantissa), minus the exponent bias of
  ``2^-15``. Codes 16..240 stand for ``2^(e - 15) * (1 + m / 16)`` (``e = code >> 4`` in 1..15, ``m = code & 15``):
  a relative error of at most ``2^-5`` (3.1 %) from ``max(a)`` down to ``2^-14 max(a)``; smaller weights
  become code 0 (zero).
- Decoding is two integer passes: ``(code as int32) << 19`` is, read as float32, ``r_j * 2^-112`` exactly
  (code 0 gives 0.0, the smallest code 16 gives ``2^-126``, still a normal float). The row's scale
  ``s = sum(a) / sum(decoded)`` absorbs ``max(a) * 2^112`` and makes every decoded row sum to what the exact
  row sums to (1), so each ``R_i`` stays row-stochastic and the rollout keeps its total (the correction is
  one factor per row, within 1 % of 1 for softmax rows in the tests).
- ``v @ A_i = (v * s) @ D_i``, with ``D_i`` decoded in blocks of `DECODE_ROWS` rows into one reused buffer;
  only the rows where ``v`` is non-zero are decoded (at the last layer, the query rows alone).

Bytes: ``layers * N^2`` codes plus ``4 * layers * N`` scales (113.4 MB for the paper-sized encoder). Building
reads ``heads * block * N`` weights at a time (`BLOCK_BYTES`).
"""

from __future__ import annotations

import torch

BLOCK_BYTES = 8 * 2**20  # float32 weights materialised at once while the stack is built (cache-sized: fastest here)
DECODE_ROWS = 64  # rows decoded at once in a product: the int32 buffer stays in the core's cache (fastest here)
_BIAS = 112 << 4  # float32 exponent field 112 (2^-15) -> code exponent 0
_MIN_CODE, _MAX_CODE = 16, (127 << 4) - _BIAS  # 2^-14 and 1.0 (relative to the row maximum)


def encode_rows(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``a (B, N)`` float32 >= 0 -> ``(codes (B, N) uint8, scale (B,) float32)`` (module doc)."""
    a = a.float()
    peak = a.amax(-1, keepdim=True)
    r = a * torch.where(peak > 0, peak, torch.ones_like(peak)).reciprocal_()
    codes = r.view(torch.int32).add_(1 << 18).bitwise_right_shift_(19).sub_(_BIAS)  # round to 4 mantissa bits
    codes = codes.masked_fill_(codes < _MIN_CODE, 0).clamp_(max=_MAX_CODE).to(torch.uint8)
    total = decode_rows(codes).sum(-1)  # >= 2^-126 unless the row is all zero
    scale = torch.where(total > 0, a.sum(-1) / torch.where(total > 0, total, torch.ones_like(total)), 0.0)
    return codes, scale


def decode_rows(codes: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Codes ``(B, N)`` uint8 -> ``r * 2^-112`` ``(B, N)`` float32 (``out``: a reused int32 buffer, same shape)."""
    out = codes.to(torch.int32) if out is None else out.copy_(codes)
    return out.bitwise_left_shift_(19).view(torch.float32)


class RolloutStack:
    """One tile's per-layer head-reduced weights ``A_i``, ``(layers, N, N)`` as codes + row scales (module doc).

    ``codes (layers, N, N)`` uint8, ``scale (layers, N)`` float32; ``A_i[r] ~= scale[i, r] * decode(codes[i, r])``.
    """

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor):
        self.codes = codes
        self.scale = scale
        self.num_layers, self.n_tokens = int(codes.shape[0]), int(codes.shape[-1])

    @classmethod
    def build(cls, weights, num_layers: int, n_tokens: int, heads: int) -> RolloutStack:
        """``weights(layer, rows) -> (heads, len(rows), N)`` softmax weights; the head mean is kept."""
        codes = torch.empty(num_layers, n_tokens, n_tokens, dtype=torch.uint8)
        scale = torch.empty(num_layers, n_tokens, dtype=torch.float32)
        block = max(1, BLOCK_BYTES // (heads * n_tokens * 4))
        for layer in range(num_layers):
            for start in range(0, n_tokens, block):
                rows = torch.arange(start, min(start + block, n_tokens))
                w = weights(layer, rows)
                a = w[0] if len(w) == 1 else w.sum(0).div_(len(w))
                codes[layer, start : start + len(rows)], scale[layer, start : start + len(rows)] = encode_rows(a.cpu())
        return cls(codes, scale)

    @staticmethod
    def nbytes_for(num_layers: int, n_tokens: int) -> int:
        """Bytes a stack of ``num_layers`` layers over ``n_tokens`` tokens holds."""
        return num_layers * n_tokens * n_tokens + 4 * num_layers * n_tokens

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.scale.nbytes

    def weights(self, layer: int, rows) -> torch.Tensor:
        """Decoded ``A_layer[rows]`` ``(len(rows), N)`` float32 (for tests and inspection)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        return decode_rows(self.codes[layer, rows]) * self.scale[layer, rows, None]

    def times(self, v: torch.Tensor, layer: int, buf: torch.Tensor | None = None) -> torch.Tensor:
        """``v (Q, N) @ A_layer`` -> ``(Q, N)`` float32, decoding only the rows where ``v`` is non-zero
        (``buf``: a reused ``(DECODE_ROWS, N)`` int32 buffer)."""
        n = self.n_tokens
        out = torch.zeros(v.shape[0], n)
        active = v.ne(0).any(0).nonzero().flatten()
        if len(active) < n:  # sparse v (the last layer): the query rows alone
            for start in range(0, len(active), DECODE_ROWS):
                rows = active[start : start + DECODE_ROWS]
                out.addmm_(v[:, rows] * self.scale[layer, rows], decode_rows(self.codes[layer, rows]))
            return out
        buf = torch.empty(DECODE_ROWS, n, dtype=torch.int32) if buf is None else buf
        for start in range(0, n, DECODE_ROWS):
            stop = min(start + DECODE_ROWS, n)
            d = decode_rows(self.codes[layer, start:stop], buf[: stop - start])
            out.addmm_(v[:, start:stop] * self.scale[layer, start:stop], d)
        return out

    def rollout(self, v: torch.Tensor) -> torch.Tensor:
        """``v (Q, N) @ R_{L-1} ... R_0`` with ``R_i = (A_i + I) / 2`` -> ``(Q, N)`` float32."""
        v = v.float().cpu()
        buf = torch.empty(DECODE_ROWS, self.n_tokens, dtype=torch.int32)
        for layer in reversed(range(self.num_layers)):
            v = self.times(v, layer, buf).add_(v).mul_(0.5)
        return v
