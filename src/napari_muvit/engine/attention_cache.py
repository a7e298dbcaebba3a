"""One tile's attention kept compact: rotated queries and keys per layer, and the head-mean weights in 8 bits.

The encoder's weights of layer ``i``, head ``h`` are ``A[i, h] = softmax(q[i, h] @ k[i, h]^T * s)``,
``s = dh**-0.5``, masked by the attention mode (`model.blocks.level_mask`). A cached tile keeps

- ``q, k (layers, heads, N, dh)`` float32: ``2 * layers * N * dim * 4`` bytes. A row of one layer,
  ``A[i, :, q, :]``, is one ``(heads, dh) @ (dh, N)`` product and a softmax: exact, any layer and head.
- the head mean of every layer's weights as a `attention_rollout.RolloutStack`: ``layers * N^2`` bytes of
  8-bit codes (rounding error <= 3.1 % per weight, then each row scaled by a common factor, about 1 % from 1,
  so that it sums to 1), built once when the tile is cached.

Paper-sized encoder (N = 3072, dim 384, 12 layers, 6 heads): 113.2 MB of q and k + 113.4 MB of codes,
instead of 2.7 GB for every head's float32 weights (`cache_nbytes_for`).

Rollout: per layer ``R_i = (pick(A_i) + I) / 2`` (``pick``: mean over heads or one head); the rollout is
``R_{L-1} ... R_0``, so query ``q``'s row is ``e_q^T R_{L-1} ... R_0``, evaluated right to left as
vector-matrix products ``v <- v @ R_i`` (``Q`` start vectors at once: ``(Q, N) @ (N, N)``).
- Head mean: from the 8-bit stack (two integer passes and one vector-matrix product per layer).
- One head: from q and k, ``R_i`` rebuilt in blocks of rows where ``v`` is non-zero (exact float32; a stack
  per head would cost another ``layers * N^2`` bytes each, which the 256 MB tile budget does not hold).
Rollout rows are cached per head choice (bounded), and so are mean rows (a tile's level share is the
share of the mean row of its query tokens, one more start vector in the same pass).
`attention_row` / `attention_rows` read rows from either form of a tile's attention (a `TileAttention` or
full weights ``(layers, heads, N, N)``), for the probe (`attention`) and the tile's level share (`attention_share`).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from napari_muvit.model.blocks import level_mask

from .attention_rollout import RolloutStack

BLOCK_BYTES = 8 * 2**20  # weights materialised at once while a rollout builds R_i from q and k (cache-sized)
ROLLOUT_CACHE_ROWS = 256  # rollout rows kept per tile (all head choices together)
MEAN_CACHE_ROWS = 16  # mean rows (tile level shares) kept per tile


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
    """Attention of one tile as per-layer rotated ``q, k (layers, heads, N, dh)`` float32 and, for head-mean
    rollout, a `RolloutStack` of the head-mean weights (see module doc).

    ``level_idx (N,)`` level index of every token and ``mode`` the encoder's attention mode (for the mask).
    Keys are kept transposed, ``kt (layers, heads, dh, N)``: the products then read them contiguously.
    ``compact_rollout=False`` computes head-mean rollout from q and k too (exact, ~20x slower; no stack).
    """

    def __init__(self, q: torch.Tensor, k: torch.Tensor, level_idx: torch.Tensor | None = None, mode: str = "all",
                 compact_rollout: bool = True):
        if q.shape != k.shape or q.ndim != 4:
            raise ValueError(f"q and k must both be (layers, heads, N, dh), got {tuple(q.shape)} and {tuple(k.shape)}.")
        self.q = q
        self.kt = k.transpose(-1, -2).contiguous()
        self.num_layers, self.heads, self.n_tokens, dh = (int(v) for v in q.shape)
        self.scale = dh**-0.5
        self.level_idx = level_idx
        self.mode = mode
        self.compact_rollout = bool(compact_rollout)
        self.stack: RolloutStack | None = None  # built on first head-mean rollout (from_encoder: at once)
        self._rollout: dict = {}  # head choice -> {token: row (N,) float32 CPU}
        self._mean: dict = {}  # (layer, head, query tokens) -> mean row (N,) float32 CPU
        self.rollout_passes = 0  # right-to-left passes through the layers (for tests and benchmarks)
        self.stack_seconds = (0.0, 0.0)  # wall and process CPU seconds spent building the stack (benchmarks)

    @classmethod
    def from_encoder(cls, encoder, x: torch.Tensor, bbox: torch.Tensor | None, compact_rollout: bool = True
                     ) -> TileAttention:
        """Run ``encoder.attention_qk`` on one input ``x (1, L, C, *S)``, ``bbox (1, L, 2, ndim)``; with
        ``compact_rollout`` also build the head-mean `RolloutStack`, so no click on this tile waits for it."""
        with torch.inference_mode():
            _, qk, level_idx = encoder.attention_qk(x, bbox)
            q = torch.stack([a[0] for a, _ in qk]).float().contiguous()
            k = torch.stack([b[0] for _, b in qk]).float()
        attn = cls(q, k, level_idx, encoder.attention_mode, compact_rollout)
        if compact_rollout:
            attn.rollout_stack()
        return attn

    @staticmethod
    def cache_nbytes_for(num_layers: int, heads: int, n_tokens: int, dim: int, compact_rollout: bool = True,
                         cached_rows: bool = True) -> int:
        """Bytes a tile of ``n_tokens`` tokens holds for an encoder of this size (q, k, level indices, the
        stack; ``cached_rows``: with the row caches full), as `nbytes` reports them."""
        qk = 2 * num_layers * n_tokens * dim * 4 + 8 * n_tokens
        stack = RolloutStack.nbytes_for(num_layers, n_tokens) if compact_rollout else 0
        rows = (ROLLOUT_CACHE_ROWS + MEAN_CACHE_ROWS) * n_tokens * 4 if cached_rows else 0
        return qk + stack + rows

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape of the weights this stands for, ``(layers, heads, N, N)``."""
        return (self.num_layers, self.heads, self.n_tokens, self.n_tokens)

    @property
    def nbytes(self) -> int:
        """Bytes held: q, k, level indices, the rollout stack and cached rollout and mean rows."""
        rows = (sum(len(c) for c in self._rollout.values()) + len(self._mean)) * self.n_tokens * 4
        lvl = 0 if self.level_idx is None else self.level_idx.numel() * self.level_idx.element_size()
        stack = 0 if self.stack is None else self.stack.nbytes
        return self.q.nbytes + self.kt.nbytes + lvl + stack + rows

    def rollout_stack(self) -> RolloutStack:
        """The head-mean `RolloutStack` of this tile (built from q and k on first use)."""
        if self.stack is None:
            t0, c0 = time.perf_counter(), time.process_time()
            self.stack = RolloutStack.build(lambda layer, rows: self.weights(layer, rows, "mean"),
                                            self.num_layers, self.n_tokens, self.heads)
            self.stack_seconds = (time.perf_counter() - t0, time.process_time() - c0)
        return self.stack

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

    def _check(self, queries, layer, head):
        layer = resolve_layer(layer, self.num_layers)
        head = resolve_head(head, self.heads)
        queries = [int(q) for q in np.atleast_1d(queries)]
        if not all(0 <= q < self.n_tokens for q in queries):
            raise ValueError(f"query tokens {queries} are outside 0..{self.n_tokens - 1}.")
        return queries, layer, head

    def rows(self, queries, layer="last", head="mean", mean_of=None) -> torch.Tensor:
        """Attention of tokens ``queries (Q,)`` to every token, ``(Q, N)`` float32 CPU; ``layer`` as
        `resolve_layer`, ``head`` as `resolve_head`. ``mean_of``: tokens whose `mean_row` a rollout computes in
        the same pass (what the tile's level share asks for next)."""
        queries, layer, head = self._check(queries, layer, head)
        if layer == "rollout":
            return self._rollout_rows(queries, head, mean_of)
        return _pick(self.weights(layer, queries, head)).float().cpu()

    def mean_row(self, queries, layer="last", head="mean") -> torch.Tensor:
        """Mean of the rows of tokens ``queries (Q,)``, ``(N,)`` float32 CPU; a rollout runs one start vector
        (the mean of the queries' unit vectors: the rollout is linear in it). Cached per layer and head."""
        queries, layer, head = self._check(queries, layer, head)
        key = (layer, head, tuple(sorted(queries)))
        if key not in self._mean:
            if layer == "rollout":
                self._rollout_rows([], head, queries)
            else:
                self._keep_mean(key, _pick(self.weights(layer, queries, head)).float().cpu().mean(0))
        return self._mean[key]

    def _keep_mean(self, key, row: torch.Tensor) -> None:
        if len(self._mean) >= MEAN_CACHE_ROWS:
            self._mean.pop(next(iter(self._mean)))
        self._mean[key] = row

    # ---- rollout ------------------------------------------------------------------------------
    def _rollout_rows(self, queries: list[int], head, mean_of=None) -> torch.Tensor:
        cache = self._rollout.setdefault(head, {})
        missing = sorted(set(queries) - set(cache))
        mean_key = None
        if mean_of is not None:
            mean_of = [int(t) for t in np.atleast_1d(mean_of)]
            mean_key = ("rollout", head, tuple(sorted(mean_of)))
            if mean_key in self._mean:
                mean_key = None
        if not missing and mean_key is None:
            return self._stack_rows(cache, queries)
        starts = torch.zeros(len(missing) + (mean_key is not None), self.n_tokens)
        starts[torch.arange(len(missing)), torch.as_tensor(missing, dtype=torch.long)] = 1.0
        if mean_key is not None:
            starts[-1, torch.as_tensor(mean_of, dtype=torch.long)] += 1.0 / len(mean_of)
        out = self._rollout_pass(starts, head)
        if mean_key is not None:
            self._keep_mean(mean_key, out[-1].clone())
        rows = dict(zip(missing, out[: len(missing)].unbind(0)))
        if len(missing) > ROLLOUT_CACHE_ROWS:  # more than the cache may hold: keep nothing
            return torch.stack([cache[q] if q in cache else rows[q] for q in queries])
        if missing and sum(len(c) for c in self._rollout.values()) + len(missing) > ROLLOUT_CACHE_ROWS:
            self._rollout = {head: {}}
            cache = self._rollout[head]
        cache.update(rows)
        return self._stack_rows(cache, queries)

    def _stack_rows(self, cache: dict, queries: list[int]) -> torch.Tensor:
        return torch.stack([cache[q] for q in queries]) if queries else torch.zeros(0, self.n_tokens)

    def _rollout_pass(self, v: torch.Tensor, head) -> torch.Tensor:
        """``v^T R_{L-1} ... R_0`` for start vectors ``v (Q, N)`` -> ``(Q, N)`` float32 CPU."""
        self.rollout_passes += 1
        if head == "mean" and self.compact_rollout:
            return self.rollout_stack().rollout(v)
        n, dev = self.n_tokens, self.q.device
        n_heads = self.heads if head == "mean" else 1
        block = max(1, BLOCK_BYTES // (n_heads * n * 4))
        with torch.inference_mode():
            v = v.to(dev)
            buf = torch.empty(n_heads * min(block, n) * n, device=dev)  # one block of weights, reused
            for layer in reversed(range(self.num_layers)):
                active = v.ne(0).any(0).nonzero().flatten()  # rows of R_i that v reaches
                out = v.clone()  # softmax rows sum to 1, so (A + I) / 2 needs no renormalising: v @ I = v
                for start in range(0, len(active), block):
                    rows = active[start : start + block]
                    e, z = self._exp_rows(layer, rows, head, buf)  # (h, c, N), (h, c)
                    # v @ mean_h(e_h / z_h): each row's softmax division is folded into v's entries
                    out += torch.bmm(v[:, rows][None] / (z[:, None, :] * len(z)), e).sum(0)
                v = out.mul_(0.5)
        return v.float().cpu()

    def _exp_rows(self, layer: int, rows: torch.Tensor, head, buf: torch.Tensor):
        """``exp(s * (q k^T - row max))`` of query tokens ``rows (c,)`` in ``buf`` -> ``(e (h, c, N), row sums
        (h, c))`` (``h`` = heads, or 1 for a head index): the softmax before its division."""
        heads = slice(None) if head == "mean" else slice(head, head + 1)
        q = self.q[layer, heads][:, rows]
        e = torch.bmm(q, self.kt[layer, heads], out=buf[: q.shape[0] * q.shape[1] * self.n_tokens].view(
            q.shape[0], q.shape[1], self.n_tokens))
        if self.mode != "all":
            lvl = self.level_idx.to(rows.device)
            e.masked_fill_(~level_mask(lvl[rows][None], lvl[None], self.mode)[0], float("-inf"))
        e.sub_(e.amax(-1, keepdim=True)).mul_(self.scale).exp_()
        return e, e.sum(-1)


def attention_rows(attn, queries, layer="last", head="mean") -> np.ndarray:
    """Attention of tokens ``queries (Q,)`` to every token, ``(Q, N)`` float32; ``attn`` a `TileAttention`
    (rows computed on demand, one rollout pass for all queries) or full weights ``(layers, heads, N, N)``."""
    if isinstance(attn, TileAttention):
        return attn.rows(queries, layer, head).numpy()
    return np.stack([attention_row(attn, int(q), layer, head) for q in np.atleast_1d(queries)])


def attention_row(attn, q: int, layer="last", head="mean") -> np.ndarray:
    """Attention of token ``q`` to every token, ``(N,)``; ``attn`` a `TileAttention` or full weights
    ``(layers, heads, N, N)`` (e.g. ``encoder(..., return_attention=True)`` stacked; N x N products)."""
    if isinstance(attn, TileAttention):
        return attn.rows([q], layer, head)[0].numpy()
    n_layers, n_heads = attn.shape[:2]
    layer = resolve_layer(layer, n_layers)
    head = resolve_head(head, n_heads)

    def pick(a):  # (heads, N, N) -> (N, N)
        return a.mean(0) if head == "mean" else a[head]

    if layer == "rollout":
        eye = torch.eye(attn.shape[-1], dtype=attn.dtype)
        rollout = eye
        for i in range(n_layers):
            a = (pick(attn[i]) + eye) / 2
            a = a / a.sum(-1, keepdim=True)
            rollout = a @ rollout
        return rollout[q].numpy()
    return pick(attn[layer])[q].numpy()
