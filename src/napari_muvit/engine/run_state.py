"""The resumable run state a prediction keeps beside its store, under ``OUT.zarr/.muvit/``.

```
.muvit/state.npz          tile status (`TODO`, `PREDICTED`, `DONE`, `BACKGROUND`), scores of finished tiles,
                          written bands, partial bands kept open; replaced atomically
.muvit/bands/<b>.npz      a cancelled run's partial band sums (resumed exactly)
.muvit/scratch/<i>_<j>.npy  tile predictions of a dask run waiting for their band
```
`RunStateFiles` is the part of `OutputStore` that reads and writes them (it needs only ``self.path``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

# tile status codes in the state file
TODO, PREDICTED, DONE, BACKGROUND = 0, 1, 2, 3
STATUS_NAMES = {TODO: "todo", PREDICTED: "predicted", DONE: "done", BACKGROUND: "background"}


class RunStateFiles:
    """State, partial-band and scratch files of a run under ``self.path / ".muvit"`` (mixed into `OutputStore`)."""

    path: Path

    # ---- scratch (dask runs: tile predictions between the model and the band writer) -------------
    def _scratch(self, i, j) -> Path:
        return self.path / ".muvit" / "scratch" / f"{i}_{j}.npy"

    def write_scratch(self, i: int, j: int, pred: np.ndarray) -> None:
        """Keep a tile's ``(K, S, S)`` prediction until the bands it overlaps are written (atomic)."""
        target = self._scratch(i, j)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, pred)
        os.replace(tmp, target)

    def read_scratch(self, i: int, j: int) -> np.ndarray | None:
        p = self._scratch(i, j)
        return np.load(p) if p.exists() else None

    def has_scratch(self, i: int, j: int) -> bool:
        return self._scratch(i, j).exists()

    def delete_scratch(self, i: int, j: int) -> None:
        self._scratch(i, j).unlink(missing_ok=True)

    # ---- state --------------------------------------------------------------------------------
    def load_state(self, grid_shape, n_scores, n_bands: int = 0):
        """``(state (rows, cols) uint8, scores (rows, cols, n) float32, written (n_bands,) bool, open_bands)``.

        Arrays start as zeros (pages the OS hands out lazily: untouched rows of a huge grid cost nothing);
        scores are meaningful where the state is ``done`` or ``predicted``. ``predicted`` tiles survive only
        with the partial bands (``open_bands``, see `save_band`) a cancelled run saved with them."""
        state = np.zeros(tuple(grid_shape), np.uint8)
        scores = np.zeros((*grid_shape, n_scores), np.float32)
        written = np.zeros(int(n_bands), bool)
        open_bands: list = []
        p = self.path / ".muvit" / "state.npz"
        if p.exists():
            with np.load(p) as z:
                if z["state"].shape == tuple(grid_shape) and "score_index" in z.files:
                    state[...] = z["state"]
                    vals = z["scores"]
                    if vals.shape[-1] == n_scores:
                        scores.reshape(-1, n_scores)[z["score_index"]] = vals
                    if "bands" in z.files and z["bands"].shape == written.shape:
                        written[...] = z["bands"]
                    if "open_bands" in z.files:
                        open_bands = [int(b) for b in z["open_bands"]]
        if not all((self.path / ".muvit" / "bands" / f"{b}.npz").is_file() for b in open_bands):
            open_bands = []
        if not open_bands:
            state[state == PREDICTED] = TODO
        return state, scores, written, open_bands

    def save_state(self, state: np.ndarray, scores: np.ndarray, written=None, open_bands=None) -> None:
        """Persist ``done`` tiles (with scores), background tiles and written bands atomically. ``predicted``
        tiles are saved as ``todo`` (their output is not on disk), unless ``open_bands`` lists the partial
        bands saved with `save_band` (a cancelled run). Keys: ``state (rows, cols)``, ``score_index`` (flat
        indices of tiles with scores), ``scores (n, n_scores)``, ``bands`` (written), ``open_bands``."""
        target = self.path / ".muvit" / "state.npz"
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        disk = state if open_bands is not None else np.where(state == PREDICTED, np.uint8(TODO), state)
        idx = np.flatnonzero((disk == DONE) | (disk == PREDICTED))
        with open(tmp, "wb") as fh:
            np.savez(fh, state=disk, score_index=idx, scores=scores.reshape(-1, scores.shape[-1])[idx],
                     bands=np.zeros(0, bool) if written is None else np.asarray(written, bool),
                     open_bands=np.asarray(list(open_bands or []), np.int64))
        os.replace(tmp, target)

    def save_band(self, b: int, band) -> None:
        """Keep a partial band's sums ``[acc (K, rows, hi - lo), wsum, lo, hi]`` (region columns ``[lo, hi)``)
        for a resumed run to continue exactly (atomic)."""
        acc, wsum, lo, hi = band
        folder = self.path / ".muvit" / "bands"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{b}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            np.savez(fh, acc=acc, wsum=wsum, span=np.array([lo, hi]))
        os.replace(tmp, folder / f"{b}.npz")

    def load_band(self, b: int) -> list:
        with np.load(self.path / ".muvit" / "bands" / f"{b}.npz") as z:
            lo, hi = (int(v) for v in z["span"])
            return [z["acc"].copy(), z["wsum"].copy(), lo, hi]

    def clear_scratch(self) -> None:
        shutil.rmtree(self.path / ".muvit" / "scratch", ignore_errors=True)
        shutil.rmtree(self.path / ".muvit" / "bands", ignore_errors=True)
