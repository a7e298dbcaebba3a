"""Tile-average level share: which query tokens are averaged and how their per-level shares combine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_muvit.engine.attention_share import query_tokens, tile_level_share


def test_query_tokens_are_evenly_spaced_within_the_query_level():
    # 4 x 4 grid = 16 tokens per level; 4 queries of level 1 -> tokens 0, 5, 10, 15 of that level's block
    np.testing.assert_array_equal(query_tokens((4, 4), 1, max_queries=4), [16, 21, 26, 31])
    # fewer tokens than the cap: every token of the level, once
    np.testing.assert_array_equal(query_tokens((2, 2), 0, max_queries=64), [0, 1, 2, 3])


def _attn(rows: np.ndarray, heads: int = 1) -> torch.Tensor:
    """`(1 layer, heads, N, N)` weights whose every head holds `rows` (N, N)."""
    a = torch.as_tensor(rows, dtype=torch.float32)
    return a[None, None].repeat(1, heads, 1, 1)


def test_share_is_the_mean_of_per_query_normalised_level_sums():
    # 2 levels, 2 x 2 grid: N = 8. Level-0 queries send 1.0, 0.5, 0.25, 0.25 of their attention to level 0
    rows = np.zeros((8, 8))
    to_level0 = [1.0, 0.5, 0.25, 0.25]
    for q, a in enumerate(to_level0):
        rows[q, :4] = a / 4
        rows[q, 4:] = (1 - a) / 4
    rows[1] *= 3.0  # an unnormalised row still counts once: shares are normalised per query
    share = tile_level_share(_attn(rows), (2, 2), n_levels=2, level_index=0)
    np.testing.assert_allclose(share, [0.5, 0.5], atol=1e-6)
    # only the first and last query (max 2): (1.0 + 0.25) / 2 to level 0
    share2 = tile_level_share(_attn(rows), (2, 2), n_levels=2, level_index=0, max_queries=2)
    np.testing.assert_allclose(share2, [0.625, 0.375], atol=1e-6)


def test_share_follows_the_chosen_head_and_level():
    rows_a = np.full((6, 6), 1 / 6)  # head 0: uniform over 3 levels of 1 x 2 tokens
    rows_b = np.zeros((6, 6))
    rows_b[:, 4:] = 0.5  # head 1: every query looks only at level 2
    attn = torch.stack([torch.as_tensor(rows_a), torch.as_tensor(rows_b)]).float()[None]  # (1, 2, 6, 6)
    np.testing.assert_allclose(tile_level_share(attn, (1, 2), 3, level_index=1, head=0), [1 / 3] * 3, atol=1e-6)
    np.testing.assert_allclose(tile_level_share(attn, (1, 2), 3, level_index=1, head=1), [0, 0, 1], atol=1e-6)
    mean = tile_level_share(attn, (1, 2), 3, level_index=2, head="mean")
    np.testing.assert_allclose(mean, [1 / 6, 1 / 6, 2 / 3], atol=1e-6)


def test_a_level_the_tile_lacks_is_refused():
    with pytest.raises(ValueError, match="level index 3"):
        tile_level_share(_attn(np.eye(4)), (1, 2), n_levels=2, level_index=3)
