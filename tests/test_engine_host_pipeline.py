"""The host side of prediction: post-processing in torch on the model's device (here the CPU) equals the numpy
reference bit for bit; more reader/writer threads give the same store; the integer pyramid helpers equal their
float definitions; in-place normalisation equals the copying one."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from napari_muvit.data import Normalizer, open_pyramid
from napari_muvit.engine.band_convert import band_output
from napari_muvit.engine.downsample import downsample_mean, downsample_mean_uint8, downsample_mode
from napari_muvit.engine.grid import TileGrid
from napari_muvit.engine.predict import predict
from napari_muvit.engine.recipe import Recipe
from napari_muvit.engine.stitch import BandStitcher, OutputLayout, tile_scores
from napari_muvit.engine.tasks import SegmentationOutput
from napari_muvit.engine.testing import PixelSegmenter, random_slide

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ---- numpy references (the formulas of docs/outputs.md, written out plainly) ----------------------------
def _ref_band_output(layout, b, acc, wsum, owner, lo):
    y0, _, x0, _ = layout.region
    x0, x1 = x0 + lo, x0 + lo + acc.shape[-1]
    ra, rb = layout.band_rows(b)
    n = layout.level
    pred = wsum > 0
    if owner is not None:
        pred &= owner
    inv = np.zeros_like(wsum)
    np.divide(np.float32(1), wsum, out=inv, where=pred)
    probs = acc * inv
    r0, c0 = (y0 + ra) // n, x0 // n
    if n > 1:
        r1, c1 = -(-(y0 + rb) // n), -(-x1 // n)
        dy, dx = y0 + ra - r0 * n, x0 - c0 * n
        big = np.zeros((probs.shape[0], (r1 - r0) * n, (c1 - c0) * n), np.float32)
        cnt = np.zeros(big.shape[1:], np.float32)
        big[:, dy : dy + probs.shape[1], dx : dx + probs.shape[2]] = probs
        cnt[dy : dy + probs.shape[1], dx : dx + probs.shape[2]] = pred
        k = probs.shape[0]
        sums = big.reshape(k, r1 - r0, n, c1 - c0, n).sum(axis=(2, 4))
        count = cnt.reshape(r1 - r0, n, c1 - c0, n).sum(axis=(1, 3))
        pred = count > 0
        probs = np.divide(sums, count, out=np.zeros_like(sums), where=pred)
    labels = np.where(pred, probs.argmax(axis=0) + 1, 0).astype(np.uint8)
    if layout.prob_dtype == "uint8":
        values = np.floor(probs.astype(np.float64) * 255 + 0.5).astype(np.uint8)
    elif layout.prob_dtype == "none":
        values = labels[None]
    else:
        values = probs.astype(layout.prob_dtype)
    return r0, c0, values, labels, probs


@pytest.mark.parametrize("level", [1, 2, 4])
@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32", "none"])
@pytest.mark.parametrize("numpy_on_cpu", [True, False])  # False: the torch operations a GPU runs
@pytest.mark.parametrize("holes", ["everywhere", "first slab"])  # "first slab": later slabs fully predicted
def test_band_output_in_torch_equals_the_numpy_reference(level, dtype, numpy_on_cpu, holes, monkeypatch):
    from napari_muvit.engine import band_convert

    monkeypatch.setattr(band_convert, "SLAB", 512)  # several column slabs per band
    monkeypatch.setattr(band_convert, "NUMPY_ON_CPU", numpy_on_cpu)
    rng = np.random.default_rng(level)
    layout = OutputLayout((4096, 4096), (100, 4000, 37, 4001), level=level, chunk=(64, 1024), prob_dtype=dtype)
    b = 3
    ra, rb = layout.band_rows(b)
    rows, width = rb - ra, 1300  # > 2 column slabs
    logits = rng.normal(size=(4, rows, width)).astype(np.float32)
    probs = torch.softmax(torch.from_numpy(logits), 0).numpy()
    probs[1, 5:9] = probs[2, 5:9]  # exact ties: the first class wins
    wsum = (rng.random((rows, width)) * 2 + 0.05).astype(np.float32)
    wsum[:, :7] = 0  # never predicted
    acc = probs * wsum
    owner = rng.random((rows, width)) > 0.1
    if holes == "first slab":  # the other slabs take the path without masks
        owner[:, 400:] = True
    r0, c0, values, labels = band_output(layout, b, torch.from_numpy(acc), torch.from_numpy(wsum), owner, lo=50)
    er0, ec0, evalues, elabels, eprobs = _ref_band_output(layout, b, acc, wsum, owner, 50)
    assert (r0, c0) == (er0, ec0)
    assert values.dtype == evalues.dtype and values.shape == evalues.shape
    np.testing.assert_array_equal(labels, elabels)
    np.testing.assert_array_equal(values, evalues)
    if level == 1:
        assert labels[:, :7].max() == 0  # never predicted -> label 0
    if dtype == "float32":  # the probabilities themselves, bit for bit
        np.testing.assert_array_equal(values, eprobs)
    # numpy input gives the same bytes as torch input
    _, _, v2, l2 = band_output(layout, b, acc, wsum, owner, lo=50)
    np.testing.assert_array_equal(v2, values)
    np.testing.assert_array_equal(l2, labels)


def test_uint8_quantisation_hits_every_level_exactly():
    layout = OutputLayout((8, 256), (0, 8, 0, 256))
    p = np.tile(np.arange(256, dtype=np.float32) / 255, (8, 1))
    acc = np.stack([p, 1 - p]).astype(np.float32)
    _, _, values, labels = band_output(layout, 0, acc, np.ones((8, 256), np.float32))
    np.testing.assert_array_equal(values[0, 0], np.arange(256))
    np.testing.assert_array_equal(values[1, 0], 255 - np.arange(256))
    assert labels[0, 0] == 2 and labels[0, 255] == 1 and labels[0, 128] == 1


def test_device_probabilities_and_tile_scores_equal_numpy():
    out = SegmentationOutput(["a", "b", "c"])

    class Linear(torch.nn.Module):
        def forward(self, x, bbox=None):
            return torch.stack([x[:, 0, 0] * 2, -x[:, 0, 0], x[:, 0, 0] * 0 + 0.5], 1)

    model = Linear()
    x = torch.rand(3, 2, 1, 64, 64)
    p = out.probabilities(model, x, None)
    assert isinstance(p, torch.Tensor) and p.dtype == torch.float32 and p.shape == (3, 3, 64, 64)
    logits = model(x).numpy().astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(p.numpy(), e / e.sum(axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_array_equal(out.run(model, x, None), p.numpy())
    grid = TileGrid((0, 100, 0, 120), 64, 16)  # edge tiles own smaller squares
    tiles = [(0, 0), (0, 2), (1, 2)]
    got = tile_scores(grid, tiles, p)
    pn = p.numpy().astype(np.float64)
    for b, (i, j) in enumerate(tiles):
        a0, a1, b0, b1 = grid.owned(i, j)
        own = pn[b, :, 8 : 8 + a1 - a0, 8 : 8 + b1 - b0]
        np.testing.assert_allclose(got[b, :3], own.reshape(3, -1).mean(axis=1), atol=1e-6)
        sub = own[:, ::2, ::2]
        ent = -(sub * np.log(np.clip(sub, 1e-12, 1))).sum(axis=0).mean()
        np.testing.assert_allclose(got[b, 3], ent, atol=1e-5)
    np.testing.assert_array_equal(tile_scores(grid, tiles, p.numpy()), got)  # numpy in, same numbers


def test_tile_scores_are_the_same_bits_in_any_batch():
    """A tile's scores do not depend on the batch it came in (a resumed run's batches differ from the
    uninterrupted run's): a row-crossing batch, each tile alone and the batch reversed give the same bits."""
    grid = TileGrid((0, 8192, 0, 8192), 256, 32)  # 37 columns: the last tile of a row owns a narrower square
    rng = np.random.default_rng(1)
    p = torch.softmax(torch.from_numpy(rng.normal(size=(16, 4, 256, 256)).astype(np.float32)), 1)
    tiles = [(0, j) for j in range(27, 37)] + [(1, j) for j in range(6)]
    together = tile_scores(grid, tiles, p)
    alone = np.concatenate([tile_scores(grid, [t], p[k : k + 1]) for k, t in enumerate(tiles)])
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(tile_scores(grid, tiles[::-1], p.flip(0).contiguous())[::-1], together)


def test_probabilities_are_written_into_reused_tensors(tmp_path, monkeypatch):
    """On a CPU the softmax writes into tensors the run hands back once the stitcher has added them: a run of
    12 batches takes at most a pool's worth of distinct tensors, and its store has the bytes of a run that
    allocated a fresh tensor per batch."""
    from napari_muvit.engine import tileops

    out = SegmentationOutput(["a", "b", "c"])
    pool = tileops.BufferPool()
    x = torch.rand(2, 1, 1, 32, 32)
    model = PixelSegmenter()
    p = out.probabilities(model, x, None, buffers=pool)
    np.testing.assert_array_equal(p.numpy(), out.probabilities(model, x, None).numpy())
    pool.give(p)
    assert out.probabilities(model, x, None, buffers=pool) is p  # the same tensor again

    img = random_slide((300, 340), seed=4)
    taken, fresh = [], tileops.BufferPool.take_tensor

    def recording(self, shape):
        t = fresh(self, shape)
        taken.append(t)  # kept alive, so that ids are not reused
        return t

    stores = []
    for name, take in (("pooled", recording), ("fresh", lambda self, shape: torch.empty(tuple(shape)))):
        monkeypatch.setattr(tileops.BufferPool, "take_tensor", take)
        rec = Recipe(source=None, out=str(tmp_path / f"{name}.zarr"), tile=64, overlap=16, batch_size=5,
                     normalization={"policy": "fixed", "low": [0.1], "high": [0.9]},
                     extra={"io_threads": 2, "output_chunk": [32, 96]})
        res = predict(rec, model=PixelSegmenter(), pyramid=open_pyramid(img))
        assert res.complete and res.tiles_done == 56
        stores.append(_store_bytes(Path(res.path)))
    # 11 batches of 5 tiles and one of 1 (another shape): at most a pool's worth of tensors, plus that one
    assert len(taken) == 12 and len({id(t) for t in taken}) <= tileops.BufferPool().keep_tensors + 1
    assert len(stores[0]) > 10 and stores[0] == stores[1]


def _numpy_sums(grid, preds, shape):
    """The blended sums ``(acc (K, H, W), wsum (H, W))`` of ``preds`` ((i, j) -> (K, tile, tile)) added in
    row-major order with numpy, as the stitcher adds them (overlap 16: a tile starts 8 px before its owned
    square)."""
    h, w = shape
    k = next(iter(preds.values())).shape[0]
    acc_ref = np.zeros((k, h, w), np.float32)
    w_ref = np.zeros((h, w), np.float32)
    win = grid.window
    for (i, j), p in preds.items():  # row-major, as the stitcher
        oy, ox = i * grid.stride - 8, j * grid.stride - 8
        ya, yb, xa, xb = max(0, oy), min(h, oy + 64), max(0, ox), min(w, ox + 64)
        acc_ref[:, ya:yb, xa:xb] += p[:, ya - oy : yb - oy, xa - ox : xb - ox] * win[ya - oy : yb - oy, xa - ox : xb - ox]
        w_ref[ya:yb, xa:xb] += win[ya - oy : yb - oy, xa - ox : xb - ox]
    return acc_ref, w_ref


def _random_tiles(h: int, w: int, seed: int):
    """A ``(h, w)`` slide's grid (tile 64, overlap 16), its layout in 32 x 64 chunks and random 2-class
    predictions for every tile."""
    grid = TileGrid((0, h, 0, w), 64, 16)
    layout = OutputLayout((h, w), (0, h, 0, w), chunk=(32, 64))
    rng = np.random.default_rng(seed)
    rows, cols = grid.grid_shape
    preds = {(i, j): rng.random((2, 64, 64)).astype(np.float32) for i in range(rows) for j in range(cols)}
    return grid, layout, preds


def test_stitcher_sums_equal_numpy_sums_in_row_major_order():
    grid, layout, preds = _random_tiles(150, 170, seed=3)
    rows, cols = grid.grid_shape
    st = BandStitcher(grid, layout, 2)
    for i in range(rows):
        st.add_batch([(i, j) for j in range(cols)], np.stack([preds[i, j] for j in range(cols)]))
    acc_ref, w_ref = _numpy_sums(grid, preds, (150, 170))
    for b in layout.bands():
        acc, wsum, lo, hi = st.pop(b)
        ra, rb = layout.band_rows(b)
        np.testing.assert_array_equal(acc.numpy(), acc_ref[:, ra:rb, lo:hi])
        np.testing.assert_array_equal(wsum.numpy(), w_ref[ra:rb, lo:hi])


def test_recycled_band_blocks_start_from_zero():
    """Blocks of written bands are zeroed and reused for later bands: every band still equals its numpy sums."""
    grid, layout, preds = _random_tiles(300, 170, seed=8)
    rows, cols = grid.grid_shape
    acc_ref, w_ref = _numpy_sums(grid, preds, (300, 170))
    st = BandStitcher(grid, layout, 2)
    bands, reused = list(layout.bands()), 0
    for i in range(rows):
        while bands and st.last_row(bands[0]) < i:  # complete bands: checked, then recycled
            b = bands.pop(0)
            blocks = st.pop_blocks(b)
            acc, wsum, lo, hi = st.assemble(blocks)
            ra, rb = layout.band_rows(b)
            np.testing.assert_array_equal(acc.numpy(), acc_ref[:, ra:rb, lo:hi])
            np.testing.assert_array_equal(wsum.numpy(), w_ref[ra:rb, lo:hi])
            st.recycle(blocks)
        spare = {id(a) for a, _ in st._spare}
        st.add_batch([(i, j) for j in range(cols)], np.stack([preds[i, j] for j in range(cols)]))
        reused += sum(id(a) in spare for blk in st.open.values() for a, _ in blk.values())
    assert reused > 0  # later bands did run on recycled blocks
    for b in bands:
        acc, wsum, lo, hi = st.pop(b)
        ra, rb = layout.band_rows(b)
        np.testing.assert_array_equal(acc.numpy(), acc_ref[:, ra:rb, lo:hi])


def _store_bytes(path: Path) -> dict:
    """Every chunk file and the tile table of a store, by relative path (metadata with run times left out)."""
    out = {}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        if p.is_file() and "/c/" in f"/{rel}" or rel.endswith("tiles.csv"):
            out[rel] = p.read_bytes()
    return out


def test_threaded_reading_and_writing_give_the_same_store(tmp_path):
    img = random_slide((300, 340), seed=4)
    arrs = []
    for threads in (1, 3):
        rec = Recipe(source=None, out=str(tmp_path / f"t{threads}.zarr"), tile=64, overlap=16, batch_size=5,
                     normalization={"policy": "fixed", "low": [0.1], "high": [0.9]},
                     extra={"io_threads": threads, "output_chunk": [32, 96]})
        res = predict(rec, model=PixelSegmenter(), pyramid=open_pyramid(img))
        assert res.complete and res.tiles_done == 56
        arrs.append((res.path, _store_bytes(Path(res.path))))
        g = zarr.open_group(str(res.path), mode="r")
        assert g["0"].dtype == np.uint8 and g["0"].shape[-2:] == (300, 340)
    (_, a), (_, b) = arrs
    assert len(a) > 10 and a.keys() == b.keys()
    for k in a:
        assert a[k] == b[k], k


def test_downsample_helpers_equal_their_definitions():
    quads = np.array(list(itertools.product(range(4), repeat=4)), np.uint8)  # every 2x2 pattern of 4 labels
    img = quads.reshape(-1, 2, 2)
    mode = downsample_mode(img)[:, 0, 0]
    for q, m in zip(quads, mode):
        counts = [int((q == v).sum()) for v in q]
        assert m == q[int(np.argmax(counts))]  # most frequent, ties to the earliest
    vals = np.array(list(itertools.product([0, 1, 2, 3, 127, 128, 254, 255], repeat=4)), np.uint8).reshape(-1, 2, 2)
    np.testing.assert_array_equal(downsample_mean_uint8(vals), np.rint(downsample_mean(vals)).astype(np.uint8))
    odd = np.random.default_rng(0).integers(0, 256, (3, 7, 9)).astype(np.uint8)  # edge padding path
    np.testing.assert_array_equal(downsample_mean_uint8(odd), np.rint(downsample_mean(odd)).astype(np.uint8))
    assert downsample_mean_uint8(odd).shape == (3, 4, 5)
    sums = np.zeros((2, 2 * 1021), np.uint8)  # one block per sum 0..1020 (every remainder and quotient parity)
    for s in range(1021):
        parts = [min(255, max(0, s - 255 * k)) for k in range(4)]
        sums[0, 2 * s], sums[0, 2 * s + 1], sums[1, 2 * s], sums[1, 2 * s + 1] = parts
    assert (sums.reshape(2, -1, 2).sum(axis=(0, 2)) == np.arange(1021)).all()
    np.testing.assert_array_equal(downsample_mean_uint8(sums), np.rint(downsample_mean(sums)).astype(np.uint8))
    wide = np.random.default_rng(1).integers(0, 256, (4, 64, 300)).astype(np.uint8)[..., ::-1]  # not contiguous
    np.testing.assert_array_equal(downsample_mean_uint8(wide), np.rint(downsample_mean(wide)).astype(np.uint8))


def test_in_place_normalisation_equals_the_copying_one():
    norm = Normalizer.fixed([3.0, 10.0, -1.0], [250.0, 90.0, 7.0])
    img = np.random.default_rng(0).random((3, 20, 30)).astype(np.float32) * 255
    ref = norm(img)
    work = img.copy()
    out = norm.apply_(work)
    assert out is work
    np.testing.assert_array_equal(out, ref)
    view = img[:, ::2]  # not owning its data: a new array, input untouched
    out2 = norm.apply_(view)
    np.testing.assert_array_equal(out2, norm(view))
    assert not np.shares_memory(out2, img)


class _Chunks:
    """A stand-in store recording the chunks written."""

    def __init__(self):
        self.chunks = {}

    def write_chunk(self, start, values, labels):
        self.chunks[tuple(start)] = (values.copy(), labels.copy())


@pytest.mark.parametrize("level", [1, 2])
def test_blocks_converted_where_they_lie_equal_the_assembled_band(level):
    # 5000 px wide region: three 2048-px column blocks, the middle one never touched by a tile
    grid = TileGrid((0, 200, 0, 5000), 64, 16)
    layout = OutputLayout((200, 5000), (0, 200, 0, 5000), level=level, chunk=(64 // level, 1024))
    rng = np.random.default_rng(5)
    state = np.ones(grid.grid_shape, np.uint8)
    state[:, 5] = 0  # a background column of tiles (owner mask)
    a, b = BandStitcher(grid, layout, 3), BandStitcher(grid, layout, 3)
    for i in range(2):
        for j in [*range(0, 12), *range(90, 104)]:
            p = torch.softmax(torch.from_numpy(rng.normal(size=(3, 64, 64)).astype(np.float32)), 0)
            a.add(i, j, p)
            b.add(i, j, p)
    sa, sb = _Chunks(), _Chunks()
    from napari_muvit.engine.band_convert import finish_band, finish_blocks

    blocks = a.pop_blocks(0)
    assert sorted(blocks) == [0, 2]
    finish_blocks(sa, grid, layout, 0, blocks, state, 0)
    finish_band(sb, grid, layout, 0, b.pop(0), state, 0)
    assert sa.chunks.keys() == sb.chunks.keys() and len(sa.chunks) >= 3
    for k in sa.chunks:
        np.testing.assert_array_equal(sa.chunks[k][0], sb.chunks[k][0])
        np.testing.assert_array_equal(sa.chunks[k][1], sb.chunks[k][1])
    labels = np.concatenate([sa.chunks[k][1] for k in sorted(sa.chunks)], axis=1)
    assert labels[:, 2100 // level : 2900 // level].max() == 0  # the untouched block: not predicted
    assert labels[:, : 200 // level].min() >= 1  # predicted
    assert labels[:, 248 // level : 280 // level].max() == 0  # owned by the background tile column 5


def test_rows_of_overlapping_integer_crops_read_through_one_normalised_window():
    """At a coarse level neighbouring tiles share most of their context, so a row of them is normalised once as a
    window and cropped: still bit for bit `Pyramid.crops` (padding at the slide's edges included)."""
    from napari_muvit.data import Normalizer
    from napari_muvit.engine.context import resolve
    from napari_muvit.engine.testing import tiny_segmenter
    from napari_muvit.engine.tileops import read_batch

    rng = np.random.default_rng(5)
    fine = rng.integers(0, 256, (3, 160, 192), dtype=np.uint8)
    coarse = fine.reshape(3, 40, 4, 48, 4).mean(axis=(2, 4)).round().astype(np.uint8)
    pyr = open_pyramid([fine, coarse], axes="cyx")
    model = tiny_segmenter(levels=(1, 4))
    model.encoder.in_channels = 3
    ctx = resolve(Recipe(tile=32, overlap=8, out=""), model=model, pyramid=pyr)
    ctx.normalizer = Normalizer("percentile", [12.3, 7.9, 30.1], [201.7, 240.2, 180.6])
    # rows of 5 and 8 adjacent tiles: at level 4 their window (32 x 56 or 74 px) is under half their crops' area
    tiles = [(0, j) for j in range(5)] + [(3, j) for j in range(8)]
    x, bbox = read_batch(ctx, tiles)
    for b, t in enumerate(tiles):
        img_t, bbox_t = pyr.crops(ctx.grid.tile_center(*t), (1, 4), 32, normalizer=ctx.normalizer)
        np.testing.assert_array_equal(x[b].view(np.uint32), img_t.view(np.uint32))
        np.testing.assert_array_equal(bbox[b], bbox_t)
    assert (x[0, 1, :, 0, 0] == 0).all() and (x[0, 1] != 0).any()  # padding stays zero next to normalised pixels
