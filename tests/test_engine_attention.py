"""Attention probe: equals the reference model's own weights, per-level maps and shares, a compact tile cache.

The cache keeps every layer's rotated q and k (`TileAttention`) and computes rows on demand; these tests
check it against the full `(layers, heads, N, N)` weights (the reference package's and our explicit path's),
row by row, for every layer, head, head mean and rollout. Click latency is measured in
`benchmarks/attention_click.py`, not here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_muvit.data import open_pyramid
from napari_muvit.engine.attention import AttentionSession, attention_probe, entry_nbytes, probe_entry
from napari_muvit.engine.attention_cache import TileAttention, attention_row, attention_rows
from napari_muvit.engine.attention_share import query_tokens, tile_level_share
from napari_muvit.engine.testing import random_slide

REF = Path(__file__).parent / "data" / "reference"
ENCODER_CASES = ([c for c in json.loads((REF / "cases.json").read_text())["cases"] if c["kind"] == "encoder"]
                 if (REF / "cases.json").is_file() else [])


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_probe_equals_reference_attention_weights():
    from napari_muvit.model import load_model

    case = REF / "enc2d_per_layer_all"
    if not case.is_dir():
        pytest.skip("reference fixtures are not present")
    data = np.load(REF / "enc2d_per_layer_all.npz")
    model = load_model(case)
    levels = tuple(int(v) for v in model.encoder.levels)  # (1, 8, 32)
    dummy = open_pyramid(np.zeros((2, 64, 64), np.float32), axes="cyx")
    session = AttentionSession(dummy, model, tile=16, normalizer=None)
    x, bbox = data["x"][0], data["bbox"][0]  # (3, 2, 16, 24), (3, 2, 2)
    entry = session.run(x, bbox)
    assert entry["grid"] == (4, 6)
    # the centre of token (2, 3) of level 8's crop
    li, level, patch = 1, 8, 4
    edge = bbox[li, 0] - (level - 1) / 2
    point = edge + (np.array([2, 3]) + 0.5) * level * patch - 0.5
    q = li * 24 + 2 * 6 + 3
    ref = data["attn"][:, 0]  # (layers, heads, N, N) from the reference package
    res = probe_entry(entry, levels, patch, point, layer="last", head="mean", query_level=8)
    assert res.tile["query_index"] == q
    np.testing.assert_allclose(res.query_world_yx, point, atol=1e-4)
    flat = np.concatenate([m.ravel() for m, _ in res.maps])
    np.testing.assert_allclose(flat, ref[-1, :, q].mean(0), atol=1e-5)
    res0 = probe_entry(entry, levels, patch, point, layer=0, head=1, query_level=8)
    np.testing.assert_allclose(np.concatenate([m.ravel() for m, _ in res0.maps]), ref[0, 1, q], atol=1e-5)
    assert [m.shape for m, _ in res.maps] == [(4, 6)] * 3
    np.testing.assert_allclose(res.level_share, [ref[-1, :, q, i * 24 : (i + 1) * 24].mean(0).sum() for i in range(3)],
                               atol=1e-5)
    np.testing.assert_array_equal(res.maps[2][1], bbox[2])


@pytest.mark.parametrize("case", ENCODER_CASES, ids=[c["name"] for c in ENCODER_CASES])
def test_compact_cache_rows_equal_reference_weights(case):
    """Every row of every layer and head (2D/3D, all/causal/same masks, every rotary mode) from q and k."""
    from napari_muvit.model import load_model

    enc = load_model(REF / case["folder"])
    data = np.load(REF / case["npz"])
    x = torch.from_numpy(data["x"][:1])
    bbox = torch.from_numpy(data["bbox"][:1]) if "bbox" in data else None
    ref = data["attn"][:, 0]  # (layers, heads, N, N)
    attn = TileAttention.from_encoder(enc, x, bbox)
    assert attn.shape == ref.shape
    every = np.arange(ref.shape[-1])
    for layer in range(ref.shape[0]):
        for head in range(ref.shape[1]):
            np.testing.assert_allclose(attn.rows(every, layer, head).numpy(), ref[layer, head], atol=1e-5, rtol=0)
        np.testing.assert_allclose(attn.rows(every, layer, "mean").numpy(), ref[layer].mean(0), atol=1e-5, rtol=0)


def _encoder(mode="all", levels=(1, 4, 16), patch=8, dim=64, layers=3, heads=2):
    from napari_muvit.model import MuViTEncoder

    torch.manual_seed(0)
    return MuViTEncoder(in_channels=1, levels=levels, patch_size=patch, num_layers=layers, dim=dim, heads=heads,
                        attention_mode=mode).eval()


@pytest.mark.parametrize("mode", ["all", "causal", "same"])
def test_compact_cache_equals_full_matrix_path(mode):
    """Layer rows (every layer, head and the head mean) and rollout equal the N x N path on the same tile."""
    session = AttentionSession(open_pyramid(random_slide((512, 512), seed=1)), _encoder(mode), tile=32)
    entry, _ = session.entry_for((100.0, 70.0))
    attn = entry["attn"]
    assert isinstance(attn, TileAttention)
    xt = torch.as_tensor(entry["x"])[None]
    with torch.inference_mode():
        tokens, weights = session.encoder(xt, torch.as_tensor(entry["bbox"])[None], return_attention=True)
        tokens_qk, _, _ = session.encoder.attention_qk(xt, torch.as_tensor(entry["bbox"])[None])
    np.testing.assert_allclose(tokens_qk.numpy(), tokens.numpy(), atol=1e-5, rtol=0)
    full = torch.stack([w[0] for w in weights])  # (3 layers, 2 heads, 48, 48)
    assert attn.shape == full.shape == (3, 2, 48, 48)
    every = np.arange(48)
    for layer in ("last", 0, 1, 2, -2, "rollout"):
        for head in ("mean", 0, 1, -1):
            expected = np.stack([attention_row(full, int(q), layer, head) for q in every])
            got = attention_rows(attn, every, layer, head)
            if layer == "rollout" and head == "mean":  # the 8-bit stack: within 1 % of each row's maximum
                assert np.all(np.abs(got - expected).max(1) <= 0.01 * expected.max(1))
                np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
                np.testing.assert_allclose(got.sum(1), 1, atol=1e-5)
                continue
            np.testing.assert_allclose(got, expected, atol=2e-6, rtol=0)
            np.testing.assert_allclose(attention_row(attn, 17, layer, head), expected[17], atol=2e-6, rtol=0)
    # whole probe results (maps, shares, query) and the tile's level share agree with a full-weights entry
    full_entry = dict(entry, attn=full)
    exact = dict(entry, attn=TileAttention(attn.q, attn.kt.transpose(-1, -2), attn.level_idx, mode, compact_rollout=False))
    for kw in ({"layer": "rollout"}, {"layer": "rollout", "query_level": 16}):  # head mean from q and k: exact
        new = probe_entry(exact, session.levels, session.patch_size, (100.0, 70.0), **kw)
        old = probe_entry(full_entry, session.levels, session.patch_size, (100.0, 70.0), **kw)
        for (m_new, _), (m_old, _) in zip(new.maps, old.maps):
            np.testing.assert_allclose(m_new, m_old, atol=2e-6, rtol=0)
    assert exact["attn"].stack is None and attn.stack is not None
    for kw in ({}, {"layer": "rollout", "head": 1, "query_level": 4}, {"layer": 0, "head": "mean", "query_level": 16}):
        new = probe_entry(entry, session.levels, session.patch_size, (100.0, 70.0), **kw)
        old = probe_entry(full_entry, session.levels, session.patch_size, (100.0, 70.0), **kw)
        assert new.tile == old.tile and new.query_world_yx == old.query_world_yx
        for (m_new, b_new), (m_old, b_old) in zip(new.maps, old.maps):
            np.testing.assert_allclose(m_new, m_old, atol=2e-6, rtol=0)
            np.testing.assert_array_equal(b_new, b_old)
        np.testing.assert_allclose(new.level_share, old.level_share, atol=1e-5, rtol=0)
        li = session.levels.index(kw.get("query_level", 1))
        args = (entry["grid"], 3, li, kw.get("layer", "last"), kw.get("head", "mean"))
        np.testing.assert_allclose(tile_level_share(attn, *args), tile_level_share(full, *args), atol=1e-5, rtol=0)


def test_cache_holds_queries_and_keys_not_weights():
    session = AttentionSession(open_pyramid(random_slide((512, 512), seed=1)), _encoder(dim=96, layers=4, heads=4), tile=64)
    assert session.cache_nbytes() == 0
    attention_probe(session, (10.0, 10.0))
    entry, _ = session.entry_for((10.0, 10.0))
    attn = entry["attn"]
    n, dim = 3 * 8 * 8, 96
    assert attn.q.shape == (4, 4, n, dim // 4) and attn.kt.shape == (4, 4, dim // 4, n)
    assert attn.q.dtype == attn.kt.dtype == torch.float32
    level_bytes = n * 8  # int64 level index per token
    stack_bytes = 4 * n * n + 4 * 4 * n  # 8-bit head-mean weights of 4 layers + a float32 scale per row
    assert attn.stack.codes.dtype == torch.uint8 and attn.stack.codes.shape == (4, n, n)
    # 2 x layers x N x dim float32 for q and k (every head's float32 weights would be 4 x heads x more than the stack)
    assert attn.nbytes == 2 * 4 * n * dim * 4 + level_bytes + stack_bytes
    assert attn.nbytes == TileAttention.cache_nbytes_for(4, 4, n, dim, cached_rows=False)
    assert session.cache_nbytes() == entry_nbytes(entry) == attn.nbytes + entry["x"].nbytes + entry["bbox"].nbytes
    # cached rows count too: a rollout click keeps its row and the tile share's mean row (one pass)
    attention_probe(session, (10.0, 10.0), layer="rollout")
    assert attn.nbytes == 2 * 4 * n * dim * 4 + level_bytes + stack_bytes + 2 * n * 4
    with pytest.raises(ValueError, match="query tokens"):
        attn.rows([n], 0, "mean")


def test_rollout_one_pass_serves_click_and_tile_share():
    """The click's rollout also computes the mean row the tile's level share needs; repeats are cached."""
    session = AttentionSession(open_pyramid(random_slide((512, 512), seed=1)), _encoder(), tile=32)
    res = attention_probe(session, (100.0, 70.0), layer="rollout", head=1, query_level=4)
    entry, _ = session.entry_for((100.0, 70.0))
    attn = entry["attn"]
    assert attn.rollout_passes == 1
    share = tile_level_share(attn, entry["grid"], 3, 1, "rollout", 1)
    assert attn.rollout_passes == 1  # the share's mean row came with the click
    tokens = query_tokens(entry["grid"], 1)
    assert ("rollout", 1, tuple(tokens.tolist())) in attn._mean and list(attn._rollout[1]) == [res.tile["query_index"]]
    # the share of the mean row is the mean of the 16 queries' shares (each rollout row sums to 1)
    rows = attn.rows(tokens, "rollout", 1).numpy()
    per_query = rows.reshape(16, 3, 16).sum(-1)
    np.testing.assert_allclose(share, (per_query / per_query.sum(-1, keepdims=True)).mean(0), atol=1e-6)
    passes = attn.rollout_passes
    attention_probe(session, (100.0, 70.0), layer="rollout", head=1, query_level=4)
    assert attn.rollout_passes == passes
    attention_probe(session, (100.0, 70.0), layer="rollout", head="mean", query_level=4)
    assert attn.rollout_passes == passes + 1  # another head choice, another pass
    assert abs(share.sum() - 1) < 1e-6
    assert session.forward_calls == 1


def test_rollout_cache_is_bounded(monkeypatch):
    from napari_muvit.engine import attention_cache

    monkeypatch.setattr(attention_cache, "ROLLOUT_CACHE_ROWS", 20)
    session = AttentionSession(open_pyramid(random_slide((512, 512), seed=1)), _encoder(), tile=32)
    entry, _ = session.entry_for((10.0, 10.0))
    attn = entry["attn"]
    base = attn.nbytes
    first = attn.rows(np.arange(16), "rollout", "mean").numpy()
    assert attn.nbytes == base + 16 * 48 * 4
    attn.rows(np.arange(16, 24), "rollout", 0)  # 16 + 8 > 20 rows: the cache starts over
    assert attn.nbytes == base + 8 * 48 * 4 and attn.rollout_passes == 2
    every = attn.rows(np.arange(48), "rollout", "mean").numpy()  # more than 20: computed, not kept
    assert attn.nbytes == base + 8 * 48 * 4 and attn.rollout_passes == 3
    np.testing.assert_allclose(every[:16], first, atol=1e-6, rtol=0)


def _session(levels=(1, 4, 16), crop=64, patch=8, dim=128, layers=6, heads=4):
    from napari_muvit.model import MuViTEncoder

    torch.manual_seed(0)
    enc = MuViTEncoder(in_channels=1, levels=levels, patch_size=patch, num_layers=layers, dim=dim, heads=heads).eval()
    pyr = open_pyramid(random_slide((1024, 1024), seed=1))
    return AttentionSession(pyr, enc, tile=crop)


def test_same_tile_is_cached():
    session = _session()
    r1 = attention_probe(session, (100, 100))
    for p in [(70, 90), (120, 64), (127, 127)]:  # same 64 px tile (64..127)
        r = attention_probe(session, p, layer="rollout", head=2)
        assert r.tile["origin_yx"] == (64, 64)
    assert session.forward_calls == 1
    attention_probe(session, (130, 100))
    assert session.forward_calls == 2
    assert r1.tile["origin_yx"] == (64, 64)
    assert r1.info["num_layers"] == 6 and r1.info["heads"] == 4


def test_maps_shares_and_geometry():
    session = _session(dim=64, layers=2, heads=2)
    for layer in ("last", 0, -2, "rollout"):
        r = attention_probe(session, (300.0, 500.0), layer=layer, head="mean", query_level=4)
        assert [m.shape for m, _ in r.maps] == [(8, 8)] * 3
        assert abs(r.level_share.sum() - 1) < 1e-5 and np.all(r.level_share >= 0)
        assert abs(sum(float(m.sum()) for m, _ in r.maps) - 1) < 1e-4
    # the query patch of level 4 (32 world px) contains the point
    qy, qx = r.query_world_yx
    assert abs(qy - 300) <= 16 and abs(qx - 500) <= 16
    # the level-16 map covers 64 * 16 world px
    bb = r.maps[2][1]
    assert np.allclose(bb[1] - bb[0], 63 * 16)
    with pytest.raises(ValueError, match="outside the slide"):
        attention_probe(session, (5000, 5))
    with pytest.raises(ValueError, match="layer"):
        attention_probe(session, (10, 10), layer=7)
    with pytest.raises(ValueError, match="head"):
        attention_probe(session, (10, 10), head=9)
    with pytest.raises(ValueError, match="head"):
        attention_probe(session, (10, 10), head="max")
    with pytest.raises(ValueError, match="query level"):
        attention_probe(session, (10, 10), query_level=2)


def test_demo_model_probe_on_cached_tile():
    from napari_muvit.engine.attention import open_session

    try:
        session = open_session(random_slide((512, 512)), "demo", device="cpu")
    except FileNotFoundError:
        pytest.skip("the demo model is not installed")
    attention_probe(session, (200, 200))
    r = attention_probe(session, (210, 220), layer="rollout")
    assert session.forward_calls == 1
    assert abs(r.level_share.sum() - 1) < 1e-6
    assert abs(sum(float(m.sum()) for m, _ in r.maps) - 1) < 1e-4


def test_open_session_caps_torch_threads_at_the_engine_policy(monkeypatch):
    """Like `predict`, the probe leaves one core free (a click runs in a thread of the viewer's process)."""
    import os

    from napari_muvit.engine.attention import open_session

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(4)), raising=False)
    torch.set_num_threads(1)
    try:
        open_session(random_slide((256, 256)), "demo", device="cpu")
    except FileNotFoundError:
        pytest.skip("the demo model is not installed")
    assert torch.get_num_threads() == 3  # 4 cores - 1
