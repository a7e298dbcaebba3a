"""Flags and helpers shared by the `pretrain` and `finetune` commands.

Both commands build one `TrainRecipe`: the defaults, then ``--recipe FILE`` (YAML/JSON) if given, then every
flag given on the command line (a flag always wins over the file). The run writes the recipe it used to
``OUT/training/recipe.yaml``; ``--recipe OUT/training/recipe.yaml`` repeats the run.
"""

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
    """Flags of both commands. Recipe flags default to ``None`` (= not given: the recipe file's or the
    default value stays); the help names the default."""
    p.add_argument("--recipe", default=None, metavar="FILE",
                   help="training recipe (.yaml or .json) to start from, e.g. OUT/training/recipe.yaml of an earlier "
                        "run; flags given here override its values")
    p.add_argument("--batch-size", type=int, default=None, help="crops per optimisation step (default 8)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--device", default=None, help="auto (CUDA, then MPS, then CPU; default), cuda, mps or cpu")
    p.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16", "fp16"),
                   help="autocast precision (default auto: bf16 on a GPU, fp16 where it lacks bf16, fp32 on the CPU)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--resume", action="store_true", help="continue the run stored in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


COMMON_FIELDS = {"batch_size": "batch_size", "lr": "lr", "device": "device", "precision": "precision",
                 "seed": "seed", "threads": "threads"}


def build_recipe(args, task: str, fields: dict):
    """The run's `TrainRecipe`: defaults < ``--recipe`` file < flags given (``fields``: recipe field -> value,
    ``None`` = flag not given). ``task``: the recipe's task when neither the file nor a flag names one."""
    from napari_muvit.engine.training.recipe import TrainRecipe

    data = TrainRecipe.load(args.recipe, task=task).to_dict() if args.recipe else {"task": task}
    given = {name: getattr(args, flag) for name, flag in COMMON_FIELDS.items() if getattr(args, flag) is not None}
    given.update({k: v for k, v in fields.items() if v is not None})
    for a, b in (("steps", "epochs"), ("epochs", "steps")):  # one run length: the flag's replaces the file's
        if a in given:
            data.pop(b, None)
    data.update(given)
    return TrainRecipe.from_dict(data)


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
