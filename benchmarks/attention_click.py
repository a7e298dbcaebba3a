"""Attention-probe clicks: cache size and latency with the paper-sized encoder, or in the napari widget.

Default (engine, no display): a paper-sized encoder (dim 384, 12 layers, 6 heads, levels 1,8,32, patch 8,
3 x 256^2 crops = 3072 tokens; random weights, which cost the same as trained ones) on an in-memory
random slide, CPU. Measures the bytes one cached tile holds (`AttentionSession.cache_nbytes`: crops, every
layer's rotated q and k, the 8-bit head-mean stack for rollout and the cached rows; `cache_bytes_budget`:
the same with every row cache full, from `TileAttention.cache_nbytes_for`), a click in a new tile (encoder
pass + capture + the stack; `stack_build_s` the stack's share), and clicks in the cached tile as the
widget's worker makes them (`attention_probe` + the tile's level share over 64 query tokens): last layer /
head mean, layer 0 / head 1 at another query level, and rollout (head mean and one head).
`rollout_vs_exact`: the head-mean rollout row of one click against the exact float32 rollout from q and k
(max abs error relative to the row's maximum, argmax, top-10 tokens).
`full_weights_mb_per_tile` is what caching every layer's N x N weights would take (computed); ``--full`` also
runs that previous path once on the same tile (`full_path_*`: encoder with ``return_attention=True``, weights
stacked, rows and rollout by `attention_row` on the N x N matrices; about 3 GB of memory).

    python benchmarks/attention_click.py [--tiles 2] [--clicks 10] [--rollout-clicks 2] [--threads N] [--full]

``--widget``: the demo model in the attention probe widget of a real viewer (needs a display:
``xvfb-run -a python benchmarks/attention_click.py --widget``). A click's latency (`*_click_ms`) runs from the
widget's `probe(point)` call to the attention layers, marker, outlines and share plot request being updated on
the GUI thread; `*_on_screen_ms` runs until the canvas has finished painting them; also the engine alone
(`attention_probe` on a session) for the same cached clicks.
Prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _ms(values):
    return {"median": round(1000 * statistics.median(values), 1), "max": round(1000 * max(values), 1)}


def engine_benchmark(args) -> dict:
    """Paper-sized encoder, engine only: cache bytes per tile, new-tile and cached-tile click latency."""
    import torch

    from napari_muvit.data import open_pyramid
    from napari_muvit.engine.attention import AttentionSession, attention_probe
    from napari_muvit.engine.attention_cache import TileAttention
    from napari_muvit.engine.attention_share import TILE_SHARE_QUERIES, tile_level_share
    from napari_muvit.engine.testing import random_slide
    from napari_muvit.model import MuViTEncoder

    load0 = round(os.getloadavg()[0], 2)
    torch.manual_seed(0)
    levels, tile = (1, 8, 32), 256
    enc = MuViTEncoder(in_channels=1, levels=levels, patch_size=8, num_layers=12, dim=384, heads=6).eval()
    session = AttentionSession(open_pyramid(random_slide((args.size, args.size), seed=0)), enc, tile=tile,
                               device="cpu")
    n_tokens = len(levels) * (tile // 8) ** 2

    cpu = {}  # name -> process CPU seconds per click (all threads; steadier than wall time on a shared machine)

    def click(point, name=None, **kw):
        """What the widget's worker runs for one click: the probe, then the tile's level share."""
        t0, c0 = time.perf_counter(), time.process_time()
        res = attention_probe(session, point, **kw)
        entry, _ = session.entry_for(point)
        li = levels.index(kw.get("query_level", 1))
        tile_level_share(entry["attn"], entry["grid"], len(levels), li, kw.get("layer", "last"),
                         kw.get("head", "mean"), TILE_SHARE_QUERIES)
        if name:
            cpu.setdefault(name, []).append(time.process_time() - c0)
        return time.perf_counter() - t0, res

    new_tile, cache_mb = [], []
    for k in range(args.tiles):
        t, _ = click((tile * (k + 1) + 5.0, tile * (k + 2) + 7.0), "new_tile")
        new_tile.append(t)
        cache_mb.append(session.cache_nbytes() / 2**20)
    origin = np.array([tile * (args.tiles + 2), tile * (args.tiles + 3)], float)
    click(tuple(origin + 1))
    calls = session.forward_calls
    rng = np.random.default_rng(0)
    points = [tuple(origin + rng.uniform(0, tile - 1, 2)) for _ in range(args.clicks)]
    cached = {
        "last_mean": [click(p, "last_mean")[0] for p in points],
        "layer0_head1_query_level8": [click(p, "layer0_head1_query_level8", layer=0, head=1, query_level=8)[0]
                                      for p in points],
    }
    attn = session.entry_for(points[0])[0]["attn"]
    rollout_hits = 0
    for name, head in (("rollout_mean", "mean"), ("rollout_head2", 2)):
        # only clicks whose rollout row is not cached yet (a query near an earlier click's prefetched
        # tokens answers from the cache in ~1 ms and is counted in rollout_cache_hits)
        cached[name] = []
        for p in rng.permutation(np.array(points)):
            if len(cached[name]) == args.rollout_clicks:
                break
            before, c0 = attn.rollout_passes, time.process_time()
            t = click(tuple(p), layer="rollout", head=head)[0]
            if attn.rollout_passes > before:
                cached[name].append(t)
                cpu.setdefault(name, []).append(time.process_time() - c0)
            else:
                rollout_hits += 1
    assert session.forward_calls == calls  # every cached click stayed in the cached tile
    cache_mb.append(session.cache_nbytes() / 2**20)  # with the rollout rows cached
    entry = session.entry_for(points[0])[0]
    budget = (TileAttention.cache_nbytes_for(12, 6, n_tokens, 384) + entry["x"].nbytes + entry["bbox"].nbytes)
    exact = rollout_vs_exact(attn, entry["grid"], levels, session, points[0]) if args.clicks else {}
    full = full_path(session, points[0]) if args.full else {}
    return {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, CPU",
        "encoder": "paper-sized: dim 384, 12 layers, 6 heads, levels 1,8,32, patch 8, 256 px tiles",
        "tokens": n_tokens,
        "load_avg_1min": [load0, round(os.getloadavg()[0], 2)],
        "cache_mb_per_tile": round(max(cache_mb), 1),
        "cache_bytes_per_tile": session.cache_nbytes(),
        "cache_bytes_budget": budget,
        "stack_build_s": round(attn.stack_seconds[0], 2),
        "stack_build_cpu_s": round(attn.stack_seconds[1], 2),
        **exact,
        "full_weights_mb_per_tile": round(12 * 6 * n_tokens**2 * 4 / 2**20, 1),
        "click_ms_new_tile": _ms(new_tile),
        "click_ms_cached": _ms(cached["last_mean"]),
        **{f"click_ms_cached_{k}": _ms(v) for k, v in cached.items() if k != "last_mean"},
        "cpu_ms_per_click": {k: _ms(v) for k, v in cpu.items()},
        "cached_clicks_under_300ms": sum(t < 0.3 for v in cached.values() for t in v),
        "cached_clicks": sum(len(v) for v in cached.values()),
        "rollout_cache_hits": rollout_hits,
        **full,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def rollout_vs_exact(attn, grid, levels, session, point) -> dict:
    """The clicked token's head-mean rollout (8-bit stack) against the exact float32 rollout from q and k."""
    from napari_muvit.engine.attention import probe_entry
    from napari_muvit.engine.attention_cache import TileAttention

    entry, _ = session.entry_for(point)
    q = probe_entry(entry, levels, session.patch_size, point, layer="rollout").tile["query_index"]
    exact_attn = TileAttention(attn.q, attn.kt.transpose(-1, -2), attn.level_idx, attn.mode, compact_rollout=False)
    t0 = time.perf_counter()
    exact = exact_attn.rows([q], "rollout", "mean")[0].numpy()
    exact_s = time.perf_counter() - t0
    approx = attn.rows([q], "rollout", "mean")[0].numpy()
    top_e, top_a = set(np.argsort(exact)[-10:].tolist()), set(np.argsort(approx)[-10:].tolist())
    return {"rollout_vs_exact": {
        "max_abs_err_rel_row_max": float(np.abs(approx - exact).max() / exact.max()),
        "argmax_equal": bool(np.argmax(approx) == np.argmax(exact)),
        "top10_common": len(top_e & top_a),
        "exact_from_qk_s": round(exact_s, 2)}}


def full_path(session, point) -> dict:
    """The previous cache on the cached tile: every layer's N x N weights, rows and rollout from them."""
    import torch

    from napari_muvit.engine.attention import probe_entry
    from napari_muvit.engine.attention_cache import attention_row

    entry, _ = session.entry_for(point)
    t0 = time.perf_counter()
    with torch.inference_mode():
        _, attn = session.encoder(torch.as_tensor(entry["x"])[None], torch.as_tensor(entry["bbox"])[None],
                                  return_attention=True)
        full = torch.stack([a[0].float() for a in attn])
    new_tile = time.perf_counter() - t0
    full_entry = dict(entry, attn=full)
    times = {}
    for name, layer in (("last_mean", "last"), ("rollout_mean", "rollout")):
        t0 = time.perf_counter()
        res = probe_entry(full_entry, session.levels, session.patch_size, point, layer=layer)
        times[name] = time.perf_counter() - t0
        new = probe_entry(entry, session.levels, session.patch_size, point, layer=layer)
        err = max(float(np.abs(a - b).max()) for (a, _), (b, _) in zip(res.maps, new.maps))
        times[f"{name}_max_abs_diff"] = err
    q = res.tile["query_index"]
    assert np.allclose(attention_row(full, q, 0, 1), attention_row(entry["attn"], q, 0, 1), atol=1e-5)
    return {
        "full_path_cache_mb_per_tile": round(full.nbytes / 2**20, 1),
        "full_path_click_ms_new_tile": round(1000 * new_tile, 1),
        "full_path_click_ms_cached_last_mean": round(1000 * times["last_mean"], 1),
        "full_path_click_ms_cached_rollout_mean": round(1000 * times["rollout_mean"], 1),
        "max_abs_diff_vs_full_path": {"last_mean": times["last_mean_max_abs_diff"],
                                      "rollout_mean": times["rollout_mean_max_abs_diff"]},
    }


def _wait(app, widget, timeout=120.0):
    t0 = time.perf_counter()
    while widget._job is None or widget._job.running or widget._pending is not None:
        app.processEvents()
        time.sleep(0.001)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("probe did not finish")
    app.processEvents()


def widget_benchmark(args) -> dict:
    """The demo model in the attention probe widget, clicked in a real viewer."""
    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    from napari_muvit.data.synthetic import write_synthetic_slide
    from napari_muvit.engine.attention import attention_probe, open_session
    from napari_muvit.widgets._reader import read_slide
    from napari_muvit.widgets.attention.dock import AttentionProbeWidget

    tmp = Path(tempfile.mkdtemp(prefix="muvit-bench-"))
    slide = tmp / "slide.ome.zarr"
    write_synthetic_slide(slide, size=args.size, seed=0)
    viewer = napari.Viewer(show=True)
    data, kwargs, _ = read_slide(str(slide))[0]
    viewer.add_image(data, **kwargs)
    widget = AttentionProbeWidget(viewer)
    viewer.window.add_dock_widget(widget, name="MuViT attention probe")
    app = QApplication.instance()
    rng = np.random.default_rng(0)
    parts, on_screen = [], []

    draws = []
    viewer.window._qt_viewer.canvas._scene_canvas.events.draw.connect(lambda _e: draws.append(time.perf_counter()))

    def click(point):
        t0 = time.perf_counter()
        widget.probe(point)
        _wait(app, widget)
        t_layers = t0 + widget.last_latency_s
        while not draws or draws[-1] < t_layers:  # until the canvas has painted the new maps
            app.processEvents()
            time.sleep(0.001)
        on_screen.append(draws[-1] - t0)
        parts.append({k: widget.last_info[k] for k in ("compute_s", "delivery_s", "gui_s")})
        return widget.last_latency_s, widget.last_info["compute_s"]

    first, _ = click((300.0, 300.0))
    tile = widget.last_result["tile_px"]
    new_tile, new_tile_engine = [], []
    for k in range(args.tiles):
        total, engine = click((float(tile * (k + 1) + tile / 2), float(tile * (k + 2) + tile / 3)))
        new_tile.append(total)
        new_tile_engine.append(engine)
    origin = np.array([tile * 6, tile * 7], dtype=float)
    click(tuple(origin + 1))  # this tile's encoder pass
    points = [tuple(origin + rng.uniform(0, tile - 1, 2)) for _ in range(args.clicks)]
    same_tile, same_tile_worker = [], []
    for point in points:
        total, engine = click(point)
        same_tile.append(total)
        same_tile_worker.append(engine)
    assert tuple(widget.last_result["tile"]["origin_yx"]) == tuple(int(v) for v in origin)  # all in one tile

    session = open_session(str(slide), "demo")
    attention_probe(session, tuple(origin + 1))
    engine_only = []
    for point in points:
        t0 = time.perf_counter()
        attention_probe(session, point)
        engine_only.append(time.perf_counter() - t0)
    viewer.close()

    return {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, CPU",
        "model": "demo", "slide_px": args.size, "tile_px": tile, "levels": list(widget.last_result["levels"]),
        "first_click_ms": round(1000 * first, 1),
        "new_tile_click_ms": _ms(new_tile), "new_tile_worker_ms": _ms(new_tile_engine),
        "same_tile_click_ms": _ms(same_tile),
        "same_tile_on_screen_ms": _ms(on_screen[-args.clicks:]), "same_tile_worker_ms": _ms(same_tile_worker),
        "same_tile_engine_only_ms": _ms(engine_only),
        "same_tile_delivery_ms": _ms([p["delivery_s"] for p in parts[-args.clicks:]]),
        "same_tile_gui_update_ms": _ms([p["gui_s"] for p in parts[-args.clicks:]]),
        "same_tile_clicks_under_300ms": sum(t < 0.3 for t in same_tile), "same_tile_clicks": len(same_tile),
    }


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widget", action="store_true", help="the demo model in the napari widget (needs a display)")
    parser.add_argument("--size", type=int, default=None, help="synthetic slide side (px; 4096 engine, 1024 widget)")
    parser.add_argument("--clicks", type=int, default=None, help="clicks inside an already probed tile (10 / 20)")
    parser.add_argument("--rollout-clicks", type=int, default=2, help="engine: rollout clicks per head choice")
    parser.add_argument("--tiles", type=int, default=None, help="clicks that each open a new tile (2 / 5)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0 = the engine's policy, cores - 1, as open_session sets it)")
    parser.add_argument("--full", action="store_true", help="engine: also run the previous N x N cache once")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        from napari_muvit.engine.device import configure_threads

        configure_threads()
    defaults = {"size": 1024, "clicks": 20, "tiles": 5} if args.widget else {"size": 4096, "clicks": 10, "tiles": 2}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return widget_benchmark(args) if args.widget else engine_benchmark(args)


if __name__ == "__main__":
    print(json.dumps(main()))
