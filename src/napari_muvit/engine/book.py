"""`TileBook`: the run's state, one byte per tile, plus which output bands are written.

Tile status: ``todo``, ``predicted`` (the model ran, its output is being stitched; on disk only when a
cancelled run saved its partial bands), ``done`` (its output is on disk) and ``background`` (skipped). A blended tile is ``done`` once every band
its crop overlaps is written (`band_written`); classifier and feature tiles are ``done`` when committed.
The state file (`OutputStore.save_state`) records ``done`` tiles and written bands only, so after a crash
it never claims more than what is on disk; a resumed run predicts every tile that is not ``done`` again, in
the same fixed batches (``batch_size`` consecutive foreground tiles in row-major order), so it feeds the
model exactly the batches an uninterrupted run would.

Memory is one byte per tile (allocated lazily by the OS, so untouched rows of a huge grid cost nothing),
scores for the tiles done, and no per-tile Python objects: batches are generated row by row.
"""

from __future__ import annotations

import time

import numpy as np

from .store import BACKGROUND, DONE, PREDICTED, TODO


class TileBook:
    def __init__(self, grid, store, mode: str, foreground: np.ndarray | None, n_scores: int, batch_size: int,
                 layout=None):
        self.grid, self.store, self.mode, self.layout = grid, store, mode, layout
        self.batch_size = int(batch_size)
        n_bands = layout.bands().stop if layout is not None else 0
        self.state, self.scores, self.written, self.open_bands = store.load_state(grid.grid_shape, n_scores, n_bands)
        if foreground is not None:
            self.state[~foreground & (self.state == TODO)] = BACKGROUND
        self._n_background = int(np.count_nonzero(self.state == BACKGROUND))
        self._n_done = int(np.count_nonzero(self.state == DONE))
        self._n_predicted = int(np.count_nonzero(self.state == PREDICTED)) if self.open_bands else 0
        self.kept_open: list | None = None  # partial bands saved by a cancel: predicted tiles are kept
        self._last_save = 0.0
        self._save_every = 1.0

    # ---- queries --------------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return int(self.state.size)

    @property
    def finished(self) -> int:
        """Tiles past the model (predicted, done or background): what progress reports."""
        return self._n_done + self._n_background + self._n_predicted

    @property
    def n_done(self) -> int:
        return self._n_done

    @property
    def n_background(self) -> int:
        return self._n_background

    @property
    def complete(self) -> bool:
        return self._n_done + self._n_background == self.total

    def batches(self):
        """Every fixed batch, lazily: ``batch_size`` consecutive foreground tiles in row-major order."""
        bs = self.batch_size
        cur: list = []
        for i in range(self.state.shape[0]):
            row = self.state[i]
            cols = np.flatnonzero(row != BACKGROUND)
            if not len(cols):
                continue
            if not np.any(row[cols] == TODO):  # nothing to run in this row: keep only the open batch's tail
                keep = (len(cur) + len(cols)) % bs
                if keep <= len(cols):
                    cur = [(i, int(j)) for j in cols[len(cols) - keep :]]
                else:
                    cur = cur[len(cur) - (keep - len(cols)) :] + [(i, int(j)) for j in cols]
                continue
            for j in cols:
                cur.append((i, int(j)))
                if len(cur) == bs:
                    yield cur
                    cur = []
        if cur:
            yield cur

    def pending_batches(self):
        """Batches holding at least one tile that still needs the model (lazily)."""
        for b in self.batches():
            if any(self.state[t] == TODO for t in b):
                yield b

    def needs_model(self, tile) -> bool:
        return self.state[tile] == TODO

    # ---- updates --------------------------------------------------------------------------------
    def mark_predicted(self, tile, scores) -> None:
        if self.state[tile] != TODO:
            return
        if scores is not None:
            self.scores[tile] = scores
        if self.mode == "blend":
            self.state[tile] = PREDICTED
            self._n_predicted += 1
        else:
            self.state[tile] = DONE
            self._n_done += 1

    mark_done = mark_predicted

    def forget_partial(self) -> None:
        """Drop partial bands saved by an in-process cancel: their predicted tiles run again."""
        if self.open_bands:
            self.state[self.state == PREDICTED] = TODO
            self._n_predicted = 0
            self.open_bands = []

    def band_written(self, b: int) -> None:
        """Band ``b`` is on disk: tiles whose every band is written become ``done``."""
        self.written[b] = True
        for i in self.grid.rows_touching(*self.layout.band_rows(b)):
            a, e = self.grid.crop_rows(i)
            bands = range(self.layout.band_of(a), self.layout.band_of(e - 1) + 1)
            if all(self.written[bb] for bb in bands):
                row = self.state[i]
                hit = row == PREDICTED
                n = int(np.count_nonzero(hit))
                row[hit] = DONE
                self._n_done += n
                self._n_predicted -= n

    def save(self, force: bool = False) -> bool:
        """Persist state atomically (throttled unless ``force``; slower saves are made rarer)."""
        now = time.monotonic()
        if not force and now - self._last_save < self._save_every:
            return False
        self.store.save_state(self.state, self.scores, self.written, self.kept_open)
        took = time.monotonic() - now
        self._last_save = time.monotonic()
        self._save_every = max(1.0, 20 * took)  # state saving stays under ~5 % of the run
        return True
