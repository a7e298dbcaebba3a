"""Training checkpoints (atomic, with everything needed to resume exactly) and the loss history.

A checkpoint is one ``torch.save`` file holding plain tensors, numbers and strings only, so it loads with
``torch.load(weights_only=True)``: model, optimiser and scheduler state dicts, the torch RNG state, the
sampler's numpy bit-generator state and the step/epoch counters.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"


def capture_rng(sampler_rng: np.random.Generator | None = None, sampler_state: dict | None = None) -> dict:
    """Snapshot of the torch (CPU and CUDA) and numpy RNGs that drive sampling, masking and dropout.

    ``sampler_state`` (a bit-generator state) overrides ``sampler_rng``'s current state: a prefetching
    sampler runs ahead, and a checkpoint must hold the state after the last batch actually used.
    """
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if sampler_state is not None:
        state["sampler"] = sampler_state
    elif sampler_rng is not None:
        state["sampler"] = sampler_rng.bit_generator.state
    return state


def restore_rng(state: dict, sampler_rng: np.random.Generator | None = None) -> None:
    """Inverse of :func:`capture_rng` (in place for ``sampler_rng``)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if sampler_rng is not None and "sampler" in state:
        sampler_rng.bit_generator.state = state["sampler"]


def prepare_output(out: str | Path, resume: bool, overwrite: bool) -> tuple[Path, Path, Path]:
    """Check the output folder of a training run; returns ``(out, out/training, checkpoint path)``.

    A non-empty folder needs ``resume`` or ``overwrite``. Nothing is removed here: with ``overwrite`` the
    caller checks every input first, then moves the earlier ``out/training`` aside (:func:`set_aside`) and
    deletes it only once the new model is published (:func:`drop_aside`).
    """
    out = Path(out)
    train_dir = out / "training"
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise FileExistsError(f"Output folder {out} already exists; pass --resume to continue it or choose a new --out.")
    return out, train_dir, train_dir / CHECKPOINT_NAME


def set_aside(train_dir: Path, overwrite: bool, resume: bool) -> Path | None:
    """Move an earlier run's ``training`` folder to a hidden sibling (an atomic rename, nothing deleted).

    Called after every input of an ``overwrite`` run has been checked; returns the new place or ``None``.
    """
    train_dir = Path(train_dir)
    if not overwrite or resume or not train_dir.exists():
        return None
    aside = train_dir.with_name(f".training-replaced-{os.getpid()}")
    os.replace(train_dir, aside)
    return aside


def drop_aside(aside: Path | None) -> None:
    """Delete the earlier run's training folder once the new model has been published."""
    import shutil

    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def restore_training(ckpt: dict, model, optimizer, scheduler, sampler_rng: np.random.Generator) -> History:
    """Load a checkpoint's model, optimiser, scheduler and RNG states in place; returns its history."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    restore_rng(ckpt["rng"], sampler_rng)
    return History(ckpt["history"])


def save_checkpoint(path: str | Path, **state) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)  # atomic on POSIX and Windows: a crash never leaves half a checkpoint
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (safe loader, no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No training checkpoint at {path}; run without --resume to start a new run.")
    return torch.load(path, map_location=map_location, weights_only=True)


class History:
    """Rows of training metrics (``step``, ``loss``, ...) kept in memory and written as CSV + PNG plot."""

    def __init__(self, rows: list[dict] | None = None):
        self.rows: list[dict] = list(rows or [])

    def append(self, **row) -> None:
        self.rows.append({k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in row.items()})

    def column(self, name: str) -> np.ndarray:
        return np.array([r[name] for r in self.rows if name in r and r[name] is not None], dtype=float)

    def write_csv(self, path: str | Path) -> Path:
        path = Path(path)
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, path)
        return path

    @classmethod
    def read_csv(cls, path: str | Path) -> History:
        rows = []
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                rows.append({k: _number(v) for k, v in row.items()})
        return cls(rows)

    def plot(self, path: str | Path, x: str = "step", ys: tuple[str, ...] = ("loss",), title: str = "") -> Path:
        """Line plot of columns ``ys`` against ``x`` (log-scaled y for losses) saved as PNG."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3.2), dpi=100)
        ax = fig.add_subplot(111)
        for y in ys:
            pts = [(r[x], r[y]) for r in self.rows if r.get(y) not in (None, "") and x in r]
            if pts:
                xs, vals = zip(*pts)
                ax.plot(xs, vals, label=y)
        ax.set_xlabel(x)
        if all("loss" in y for y in ys):
            ax.set_yscale("log")
        ax.legend()
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path)
        return Path(path)


def _number(value: str):
    if value in ("", None):
        return None
    try:
        f = float(value)
    except ValueError:
        return value
    return int(f) if f.is_integer() and "." not in value and "e" not in value.lower() else f


def publish_model(model, out: str | Path, card) -> Path:
    """Write the model files (``config.yaml``, ``model.pth``, ``muvit.yaml``) into ``out``.

    ``save_model`` replaces a whole folder; training runs keep ``out/training/`` next to the model files,
    so the model is saved to a temporary sibling and each file is moved in with an atomic rename.
    """
    import shutil

    from napari_muvit.model import save_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=out))
    try:
        folder = save_model(model, tmp / "model", card=card)
        for f in folder.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
