"""Attention probe: equals the reference model's own weights, per-level maps and shares, cheap repeated clicks."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_muvit.data import open_pyramid
from napari_muvit.engine.attention import AttentionSession, attention_probe, probe_entry
from napari_muvit.engine.testing import random_slide

REF = Path(__file__).parent / "data" / "reference"


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


def _session(levels=(1, 4, 16), crop=64, patch=8, dim=128, layers=6, heads=4):
    from napari_muvit.model import MuViTEncoder

    torch.manual_seed(0)
    enc = MuViTEncoder(in_channels=1, levels=levels, patch_size=patch, num_layers=layers, dim=dim, heads=heads).eval()
    pyr = open_pyramid(random_slide((1024, 1024), seed=1))
    return AttentionSession(pyr, enc, tile=crop)


def test_same_tile_is_cached_and_cheap():
    session = _session()
    t0 = time.perf_counter()
    r1 = attention_probe(session, (100, 100))
    first = time.perf_counter() - t0
    times = []
    for p in [(70, 90), (120, 64), (127, 127)]:  # same 64 px tile (64..127)
        t0 = time.perf_counter()
        attention_probe(session, p, layer="rollout", head=2)
        times.append(time.perf_counter() - t0)
    assert session.forward_calls == 1
    assert max(times) < 0.3, (first, times)  # target: < 300 ms per click on CPU
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
    with pytest.raises(ValueError, match="query level"):
        attention_probe(session, (10, 10), query_level=2)


def test_demo_model_click_latency():
    from napari_muvit.engine.attention import open_session

    try:
        session = open_session(random_slide((512, 512)), "demo", device="cpu")
    except FileNotFoundError:
        pytest.skip("the demo model is not installed")
    attention_probe(session, (200, 200))
    t0 = time.perf_counter()
    attention_probe(session, (210, 220), layer="rollout")
    assert time.perf_counter() - t0 < 0.3
