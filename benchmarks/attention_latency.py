"""Attention-probe latency per click: a click in a new tile (encoder forward) vs clicks in the cached tile.

    python benchmarks/attention_latency.py [--size 2048] [--model demo]

CPU by default with the engine's thread policy; prints one JSON object (milliseconds, minimum of repeats).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main(argv=None):
    from napari_muvit.data.synthetic import write_synthetic_slide
    from napari_muvit.engine.attention import attention_probe, open_session
    from napari_muvit.engine.device import configure_threads

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--model", default="demo")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    threads = configure_threads()
    slide = write_synthetic_slide(Path(tempfile.mkdtemp()) / "slide.zarr", args.size, seed=0)
    session = open_session(str(slide), args.model, device=args.device)
    s = session.tile

    def ms(point, **kw):
        t0 = time.perf_counter()
        attention_probe(session, point, **kw)
        return (time.perf_counter() - t0) * 1000

    new_tile = [ms((s * (k + 2) + 5, s * (k + 3) + 7)) for k in range(args.repeats)]
    base = (s * (args.repeats + 2) + 3, s * (args.repeats + 3) + 3)
    ms(base)
    same = {name: min(ms((base[0] + k % s, base[1] + (3 * k) % s), **kw) for k in range(args.repeats))
            for name, kw in [("last_mean", {}), ("rollout", {"layer": "rollout"}),
                             ("layer0_head1_query_level4", {"layer": 0, "head": 1, "query_level": session.levels[1]})]}
    print(json.dumps({"new_tile_ms_min": round(min(new_tile), 1), "new_tile_ms_median": round(sorted(new_tile)[len(new_tile) // 2], 1),
                      **{f"same_tile_{k}_ms": round(v, 2) for k, v in same.items()},
                      "target_ms": 300, "torch_threads": threads, "model": args.model, "levels": list(session.levels),
                      "tile": s, "tokens": len(session.levels) * (s // session.patch_size) ** 2}))


if __name__ == "__main__":
    main()
