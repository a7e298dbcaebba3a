"""Share of attention each level receives, averaged over the query tokens of one cached tile.

`attention_probe` reports the share of a single query token, which is noisy; this averages the share over
evenly spaced query tokens of one level of the same tile. It reads what an `AttentionSession` has already
cached (`entry["attn"]`: a `TileAttention`, or full weights `(layers, heads, N, N)`), so it runs no forward
pass. Rollout rows sum to 1 and are linear in their start vector, so with a `TileAttention` the mean of the
queries' per-level shares is the per-level share of one rollout row started from the mean of the queries'
unit vectors (`TileAttention.mean_row`): one start vector instead of one per query, and `probe_entry`
computes it in the same pass as the clicked row.
"""

from __future__ import annotations

import numpy as np

from .attention_cache import TileAttention, attention_rows, resolve_layer

TILE_SHARE_QUERIES = 64  # query tokens averaged for the tile's share (evenly spaced when there are more)


def query_tokens(grid, level_index: int, max_queries: int = TILE_SHARE_QUERIES) -> np.ndarray:
    """Token indices `(Q,)` of up to `max_queries` evenly spaced tokens of level `level_index`.

    Tokens are ordered level by level, each level a `grid = (gh, gw)` row-major block of `gh * gw` tokens.
    """
    gh, gw = (int(v) for v in grid)
    n = gh * gw
    picked = np.unique(np.linspace(0, n - 1, min(n, int(max_queries))).round().astype(int))
    return picked + int(level_index) * n


def tile_level_share(attn, grid, n_levels: int, level_index: int, layer="last", head="mean",
                     max_queries: int = TILE_SHARE_QUERIES) -> np.ndarray:
    """Mean share of attention per level over the query tokens of level `level_index`, `(n_levels,)`, sums to 1.

    `attn` a `TileAttention` or weights `(layers, heads, N, N)`, `N = n_levels * gh * gw`; `layer` / `head` as in `attention_row`
    ('last', 'rollout' or an index; 'mean' or an index). Each query's row is split per level and
    normalised to 1 before averaging, so every query counts the same.
    """
    gh, gw = (int(v) for v in grid)
    n = gh * gw
    if not 0 <= int(level_index) < int(n_levels):
        raise ValueError(f"level index {level_index} does not exist; the tile has levels 0..{n_levels - 1}.")
    queries = query_tokens(grid, level_index, max_queries)
    if isinstance(attn, TileAttention) and resolve_layer(layer, attn.num_layers) == "rollout":
        share = attn.mean_row(queries, layer, head).numpy().reshape(int(n_levels), n).sum(-1, dtype=np.float64)
        return share / share.sum()
    rows = attention_rows(attn, queries, layer, head)
    share = rows.reshape(len(queries), int(n_levels), n).sum(-1)
    return (share / share.sum(-1, keepdims=True)).mean(0)
