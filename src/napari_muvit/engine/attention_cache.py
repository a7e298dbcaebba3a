"""One tile's attention kept compact: every layer's rotated queries and keys, weights computed on demand.

The encoder's weights of layer ``i``, head ``h`` are ``A[i, h] = softmax(q[i, h] @ k[i, h]^T * s)``,
``s = dh**-0.5``, masked by the attention mode (`model.blocks.level_mask`). Keeping ``q, k (layers, heads,
N, dh)`` costs ``2 * layers * N * dim * 4`` bytes instead of ``layers * heads * N^2 * 4`` for the weights
(paper-sized encoder, N = 3072, dim 384, 12 layers, 6 heads: 113 MB instead of 2.7 GB).

- A row of one layer, ``A[i, :, q, :]``, is one ``(heads, dh) @ (dh, N)`` product and a softmax.
- Rollout: per layer ``R_i = (pick(A_i) + I) / 2`` with rows renormalised (``pick``: mean over heads or one
  head); the rollout is ``R_{L-1} ... R_0``, so query ``q``'s row is ``e_q^T R_{L-1} ... R_0``, evaluated
  right to left as vector-matrix products ``v <- v @ R_i`` (``Q`` queries at once: ``(Q, N) @ (N, N)``).
  ``R_i`` is built from q and k in blocks of rows, and only for the rows where ``v`` is non-zero (at the
  last layer, the query rows alone), so no ``N x N`` matrix is multiplied by another and at most
  ``heads * block * N`` weights exist at a time. Rollout rows are cached per head choice (bounded).
"""

from __future__ import annotations

import numpy as np
import torch

from napari_muvit.model.blocks import level_mask

BLOCK_BYTES = 32 * 2**20  # weights materialised at once while a rollout builds R_i
ROLLOUT_CACHE_ROWS = 1024  # rollout rows kept per tile (all head choices together)


def resolve_layer(layer, n_layers: int):
    """``'last'`` / ``'rollout'`` / a layer index (negative counts from the end) -> ``'rollout'`` or ``0..n-1``."""
    if layer == "rollout":
        return "rollout"
    idx = n_layers - 1 if layer == "last" else layer
    try:
        idx = int(idx)
    except (TypeError, ValueError):
        raise ValueError(f"layer {layer!r} is not 'last', 'rollout' or a layer index 0..{n_layers - 1}.") from None
    if not -n_layers <= idx < n_layers:
        raise ValueError(f"layer {layer!r} does not exist; this model has layers 0..{n_layers - 1}.")
    return idx % n_layers


def resolve_head(head, n_heads: int):
    """``'mean'`` or a head index (negative counts from the end) -> ``'mean'`` or ``0..n-1``."""
    if head == "mean":
        return "mean"
    try:
        h = int(head)
    except (TypeError, ValueError):
        h = None
    if h is None or not -n_heads <= h < n_heads:
        raise ValueError(f"head {head!r} does not exist; this model has heads 0..{n_heads - 1} (or 'mean').")
    return h % n_heads


def _pick(w: torch.Tensor) -> torch.Tensor:
    """Head mean of weights ``(heads, Q, N)`` -> ``(Q, N)`` (one head: that head)."""
    return w[0] if len(w) == 1 else w.sum(0).div_(len(w))


class TileAttention:
    """Attention of one tile as per-layer rotated ``q, k (layers, heads, N, dh)`` float32 (see module doc).

    ``level_idx (N,)`` level index of every token and ``mode`` the encoder's attention mode (for the mask).
    Keys are kept transposed, ``kt (layers, heads, dh, N)``: the products then read them contiguously.
    """

    def __init__(self, q: torch.Tensor, k: torch.Tensor, level_idx: torch.Tensor | None = None, mode: str = "all"):
        if q.shape != k.shape or q.ndim != 4:
            raise ValueError(f"q and k must both be (layers, heads, N, dh), got {tuple(q.shape)} and {tuple(k.shape)}.")
        self.q = q
        self.kt = k.transpose(-1, -2).contiguous()
        self.num_layers, self.heads, self.n_tokens, dh = (int(v) for v in q.shape)
        self.scale = dh**-0.5
        self.level_idx = level_idx
        self.mode = mode
        self._rollout: dict = {}  # head choice -> {token: row (N,) float32 CPU}
        self.rollout_passes = 0  # right-to-left passes through the layers (for tests and benchmarks)

    @classmethod
    def from_encoder(cls, encoder, x: torch.Tensor, bbox: torch.Tensor | None) -> TileAttention:
        """Run ``encoder.attention_qk`` on one input ``x (1, L, C, *S)``, ``bbox (1, L, 2, ndim)``."""
        with torch.inference_mode():
            _, qk, level_idx = encoder.attention_qk(x, bbox)
            q = torch.stack([a[0] for a, _ in qk]).float().contiguous()
            k = torch.stack([b[0] for _, b in qk]).float()
        return cls(q, k, level_idx, encoder.attention_mode)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape of the weights this stands for, ``(layers, heads, N, N)``."""
        return (self.num_layers, self.heads, self.n_tokens, self.n_tokens)

    @property
    def nbytes(self) -> int:
        """Bytes held: q, k, level indices and cached rollout rows."""
        rows = sum(len(c) for c in self._rollout.values()) * self.n_tokens * 4
        lvl = 0 if self.level_idx is None else self.level_idx.numel() * self.level_idx.element_size()
        return self.q.nbytes + self.kt.nbytes + lvl + rows

    # ---- weights ------------------------------------------------------------------------------
    def weights(self, layer: int, queries, head="mean") -> torch.Tensor:
        """Softmax weights of query tokens ``queries (Q,)`` in layer ``layer``: ``(heads, Q, N)``, or
        ``(1, Q, N)`` for one head index; on the device q and k live on."""
        idx = torch.as_tensor(queries, dtype=torch.long, device=self.q.device)
        heads = slice(None) if head == "mean" else slice(head, head + 1)
        with torch.inference_mode():
            logits = torch.bmm(self.q[layer, heads][:, idx], self.kt[layer, heads]).mul_(self.scale)
            if self.mode != "all":
                lvl = self.level_idx.to(idx.device)
                logits.masked_fill_(~level_mask(lvl[idx][None], lvl[None], self.mode)[0], float("-inf"))
            return logits.softmax(dim=-1)

    def rows(self, queries, layer="last", head="mean") -> torch.Tensor:
        """Attention of tokens ``queries (Q,)`` to every token, ``(Q, N)`` float32 CPU; ``layer`` as
        `resolve_layer`, ``head`` as `resolve_head`."""
        layer = resolve_layer(layer, self.num_layers)
        head = resolve_head(head, self.heads)
        queries = [int(q) for q in np.atleast_1d(queries)]
        if not all(0 <= q < self.n_tokens for q in queries):
            raise ValueError(f"query tokens {queries} are outside 0..{self.n_tokens - 1}.")
        if layer == "rollout":
            return self._rollout_rows(queries, head)
        return _pick(self.weights(layer, queries, head)).float().cpu()

    # ---- rollout ------------------------------------------------------------------------------
    def _rollout_rows(self, queries: list[int], head) -> torch.Tensor:
        cache = self._rollout.setdefault(head, {})
        missing = sorted(set(queries) - set(cache))
        if len(missing) > ROLLOUT_CACHE_ROWS:  # more than the cache may hold: compute, keep nothing
            rows = dict(zip(missing, self._rollout_pass(missing, head).unbind(0)))
            return torch.stack([cache[q] if q in cache else rows[q] for q in queries])
        if missing:
            if sum(len(c) for c in self._rollout.values()) + len(missing) > ROLLOUT_CACHE_ROWS:
                self._rollout = {head: {}}
                cache = self._rollout[head]
            cache.update(zip(missing, self._rollout_pass(missing, head).unbind(0)))
        return torch.stack([cache[q] for q in queries])

    def _rollout_pass(self, queries: list[int], head) -> torch.Tensor:
        """``e_Q^T R_{L-1} ... R_0`` for query tokens ``queries (Q,)`` -> ``(Q, N)`` float32 CPU."""
        n, dev = self.n_tokens, self.q.device
        n_heads = self.heads if head == "mean" else 1
        block = max(1, BLOCK_BYTES // (n_heads * n * 4))
        with torch.inference_mode():
            v = torch.zeros(len(queries), n, device=dev)
            v[torch.arange(len(queries)), torch.as_tensor(queries)] = 1.0
            for layer in reversed(range(self.num_layers)):
                active = v.ne(0).any(0).nonzero().flatten()  # rows of R_i that v reaches
                out = torch.zeros_like(v)
                for start in range(0, len(active), block):
                    rows = active[start : start + block]
                    a = _pick(self.weights(layer, rows, head))  # (c, N)
                    a[torch.arange(len(rows), device=dev), rows] += 1.0
                    a = a / 2
                    a = a / a.sum(-1, keepdim=True)
                    out += v[:, rows] @ a
                v = out
        self.rollout_passes += 1
        return v.float().cpu()
