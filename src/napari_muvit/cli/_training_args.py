"""Flags and helpers shared by the `pretrain` and `finetune` commands."""

from __future__ import annotations

import sys
import time


def check_positive(args, names) -> None:
    """Raise for any of the ``names`` flags given as zero or a negative number."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}.")


def check_model_out(out, inputs) -> None:
    """The output model folder is no input (slide, labels, base model) and not a file; checked first."""
    from pathlib import Path

    from napari_muvit.engine.safety import check_output_path

    check_output_path(out, inputs, what="output model folder")
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"output model folder {str(out)!r} is a file; give a folder name.")


def add_common(p) -> None:
    p.add_argument("--batch-size", type=int, default=8, help="crops per optimisation step (default 8)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--resume", action="store_true", help="continue the run stored in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def printer(quiet: bool, label: str):
    """Progress callback printing about 20 lines per run to stderr."""
    state = {"t0": time.perf_counter(), "last": -1}

    def progress(done: int, total: int):
        if quiet:
            return
        tick = int(20 * done / max(total, 1))
        if tick != state["last"] or done == total:
            state["last"] = tick
            dt = time.perf_counter() - state["t0"]
            print(f"{label}: {done}/{total} steps, {dt:.0f} s", file=sys.stderr, flush=True)

    return progress
