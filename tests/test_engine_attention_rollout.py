"""Head-mean rollout from 8-bit weights (`engine.attention_rollout`): codes, error bounds, exactness of the
rollout against the float32 N x N path, blockwise building and the paper-sized tile's bytes.

Latency is measured in `benchmarks/attention_click.py`, not here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_muvit.data import open_pyramid
from napari_muvit.engine import attention_rollout
from napari_muvit.engine.attention import AttentionSession, attention_probe
from napari_muvit.engine.attention_cache import TileAttention, attention_row
from napari_muvit.engine.attention_rollout import RolloutStack, decode_rows, encode_rows
from napari_muvit.engine.testing import random_slide

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_codes_of_known_weights():
    # relative to the row maximum: 1 -> 240, 1/2 -> 224, 1/4 -> 208, 2^-14 -> 16 (smallest kept), 2^-15 -> 0
    a = torch.tensor([[1.0, 0.5, 0.25, 2.0**-14, 2.0**-15, 0.0]])
    codes, scale = encode_rows(a)
    assert codes.dtype == torch.uint8
    assert codes[0].tolist() == [240, 224, 208, 16, 0, 0]
    assert decode_rows(codes).view(torch.int32)[0, 0].item() == 240 << 19  # read as float32: 1.0 * 2^-112
    decoded = (decode_rows(codes) * scale[:, None])[0]
    # the scale makes the decoded row sum to the row's sum (here: everything but 2^-15 is exact)
    assert float(decoded.sum()) == pytest.approx(float(a.sum()), rel=1e-6)
    np.testing.assert_allclose(decoded[:4] / decoded[0], [1, 0.5, 0.25, 2.0**-14], rtol=1e-6)
    # 4 mantissa bits, rounded to nearest: 1/2 * (1 + 3/64) -> 1/2 * (1 + 1/16) (code 225), 1/2 * (1 + 1/64) -> 1/2
    codes, _ = encode_rows(torch.tensor([[1.0, 0.5 * (1 + 3 / 64), 0.5 * (1 + 1 / 64)]]))
    assert codes[0].tolist() == [240, 225, 224]


def test_decoded_weights_stay_within_the_stated_error():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 2000, generator=g) * 3.0  # peaky softmax rows spanning many binades
    a = logits.softmax(-1)
    codes, scale = encode_rows(a)
    peak = a.amax(-1, keepdim=True)
    rounded = decode_rows(codes) * (peak * 2.0**112)  # the codes alone: r = a / max(a) rounded
    kept = a >= 2.0**-14 * peak
    assert float(((rounded - a).abs() / a)[kept].max()) <= 2.0**-5 * (1 + 1e-6)  # half a step of 4 mantissa bits
    assert float(rounded[a < 2.0**-15 * peak].abs().max()) == 0.0  # far below 2^-14 of the row maximum: zero
    assert float((rounded - a)[~kept].abs().max()) <= 2.0**-14 * float(peak.max())
    # the row scale = max(a) * 2^112 times a correction that makes each decoded row sum to the row's sum
    correction = scale[:, None] / (peak * 2.0**112)
    assert float((correction - 1).abs().max()) <= 0.02
    decoded = decode_rows(codes) * scale[:, None]
    np.testing.assert_allclose(decoded.sum(-1).numpy(), a.sum(-1).numpy(), rtol=1e-5)
    assert codes.nbytes == a.numel()  # one byte per weight


def _encoder(mode="all", layers=4, dim=64, heads=2, seed=0):
    from napari_muvit.model import MuViTEncoder

    torch.manual_seed(seed)
    return MuViTEncoder(in_channels=1, levels=(1, 4, 16), patch_size=8, num_layers=layers, dim=dim, heads=heads,
                        attention_mode=mode).eval()


def _full_weights(session, entry) -> torch.Tensor:
    with torch.inference_mode():
        _, weights = session.encoder(torch.as_tensor(entry["x"])[None], torch.as_tensor(entry["bbox"])[None],
                                     return_attention=True)
    return torch.stack([w[0] for w in weights])


def _compare(got: np.ndarray, expected: np.ndarray, k: int = 5):
    """-> (max abs error / row max, argmax equal for every row, share of rows with a clear top-k (the exact
    k-th and (k+1)-th weights further apart than twice the row's error), whether those have identical top-k)."""
    err = np.abs(got - expected).max(1)
    ranked = np.sort(expected, 1)
    clear = ranked[:, -k] - ranked[:, -k - 1] > 2 * err
    top_same = [set(np.argsort(g)[-k:]) == set(np.argsort(e)[-k:]) for g, e in zip(got[clear], expected[clear])]
    return (float((err / expected.max(1)).max()), bool(np.all(got.argmax(1) == expected.argmax(1))),
            float(clear.mean()), all(top_same))


@pytest.mark.parametrize("mode", ["all", "causal"])
def test_rollout_of_every_token_matches_the_exact_float32_rollout(mode):
    """All 192 query tokens of a 64 px tile (levels 1, 4, 16), 4 layers: 8-bit stack vs N x N float32."""
    session = AttentionSession(open_pyramid(random_slide((512, 512), seed=2)), _encoder(mode), tile=64)
    entry, _ = session.entry_for((100.0, 170.0))
    attn = entry["attn"]
    full = _full_weights(session, entry)
    every = np.arange(attn.n_tokens)
    expected = np.stack([attention_row(full, int(q), "rollout", "mean") for q in every])
    got = attn.rows(every, "rollout", "mean").numpy()
    err, argmax_same, clear, top5_same = _compare(got, expected)
    assert err <= 0.005  # max abs error <= 0.5 % of the row's maximum
    assert argmax_same  # the same most-attended token for every query
    # the same top-5 tokens wherever the exact top 5 is not a tie within the error (random weights attend
    # almost uniformly, so many rows tie; the trained demo model below has a clear top 5 in most rows)
    assert clear > 0 and top5_same
    np.testing.assert_allclose(got.sum(1), 1, atol=1e-5)
    # the stack's decoded weights are the head mean within 3.1 % (above 2^-13 of each row's maximum)
    a = full[1].mean(0)
    dec = attn.stack.weights(1, every)
    kept = a >= 2.0**-13 * a.amax(-1, keepdim=True)
    assert float(((dec - a).abs() / a)[kept].max()) <= 2.0**-5 * 1.1


def test_demo_model_rollout_matches_exact():
    """The trained demo model: every query's rollout within 0.5 % of its maximum, same argmax and top 5."""
    from napari_muvit.engine.attention import open_session

    try:
        session = open_session(random_slide((512, 512), seed=4), "demo", device="cpu")
    except FileNotFoundError:
        pytest.skip("the demo model is not installed")
    entry, _ = session.entry_for((200.0, 300.0))
    full = _full_weights(session, entry)
    every = np.arange(entry["attn"].n_tokens)
    expected = np.stack([attention_row(full, int(q), "rollout", "mean") for q in every])
    err, argmax_same, clear, top5_same = _compare(entry["attn"].rows(every, "rollout", "mean").numpy(), expected)
    assert err <= 0.005 and argmax_same and clear >= 0.5 and top5_same


def test_mean_rollout_reads_the_stack_not_queries_and_keys(monkeypatch):
    session = AttentionSession(open_pyramid(random_slide((512, 512), seed=1)), _encoder(), tile=32)
    entry, _ = session.entry_for((10.0, 10.0))
    attn = entry["attn"]
    assert attn.stack is not None  # built when the tile was cached

    def no_qk(*_a, **_k):
        raise AssertionError("q and k were used")

    monkeypatch.setattr(attn, "weights", no_qk)
    monkeypatch.setattr(attn, "_exp_rows", no_qk)
    res = attention_probe(session, (10.0, 20.0), layer="rollout", head="mean")
    assert abs(res.level_share.sum() - 1) < 1e-6 and attn.rollout_passes == 1
    with pytest.raises(AssertionError, match="q and k"):
        attention_probe(session, (10.0, 20.0), layer="rollout", head=0)  # one head: from q and k


def test_stack_is_built_in_bounded_blocks(monkeypatch):
    session = AttentionSession(open_pyramid(random_slide((512, 512), seed=1)), _encoder(), tile=32)
    attn = session.entry_for((10.0, 10.0))[0]["attn"]  # 48 tokens, 2 heads
    calls = []

    def weights(layer, rows):
        calls.append(len(rows))
        return attn.weights(layer, rows, "mean")

    monkeypatch.setattr(attention_rollout, "BLOCK_BYTES", 2 * 48 * 4 * 10)  # 10 rows of 2 heads
    small = RolloutStack.build(weights, attn.num_layers, attn.n_tokens, attn.heads)
    assert max(calls) == 10 and sum(calls) == 4 * 48
    torch.testing.assert_close(small.codes, attn.stack.codes, atol=0, rtol=0)
    torch.testing.assert_close(small.scale, attn.stack.scale)


def test_paper_sized_tile_fits_256_mb():
    n = 3 * 32 * 32  # levels 1, 8, 32 at 256 px, patch 8
    crops = 3 * 256 * 256 * 4 + 3 * 2 * 2 * 4
    qk = 2 * 12 * n * 384 * 4
    stack = 12 * n * n + 12 * n * 4
    rows = (256 + 16) * n * 4  # full rollout-row and mean-row caches
    total = TileAttention.cache_nbytes_for(12, 6, n, 384) + crops
    assert total == qk + n * 8 + stack + rows + crops == 230_793_264  # 220.1 MiB
    assert total <= 256 * 10**6
    assert TileAttention.cache_nbytes_for(12, 6, n, 384, compact_rollout=False) == total - crops - stack
    assert 12 * 6 * n * n * 4 > 11 * total  # every head's float32 weights
