"""`TileBook`: the run's bookkeeping — which tiles are predicted, blended, skipped; what can be freed.

Only one process (the in-process runner, or the dask client) owns a book and writes the state file, so
state updates never race; workers only write their own chunks and scratch files.

Batches have fixed boundaries (``batch_size`` consecutive foreground tiles in row-major order), so a
resumed or distributed run feeds the model exactly the same batches as an uninterrupted one.
"""

from __future__ import annotations

import time

import numpy as np

from .store import BACKGROUND, DONE, PREDICTED, TODO


class TileBook:
    def __init__(self, grid, store, mode: str, foreground: np.ndarray, n_scores: int, batch_size: int):
        self.grid, self.store, self.mode = grid, store, mode
        self.state, self.scores = store.load_state(grid.grid_shape, n_scores)
        self.state[~foreground & (self.state == TODO)] = BACKGROUND
        if mode == "blend":  # a "predicted" tile whose scratch file is gone must be predicted again
            for i, j in zip(*np.nonzero(self.state == PREDICTED)):
                if not store.has_scratch(i, j):
                    self.state[i, j] = TODO
        order = [(int(i), int(j)) for i, j in zip(*np.nonzero(foreground))]  # row-major
        self.batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
        self._freed: set = set()
        self._last_save = 0.0
        self._to_free: list = []
        self.on_unneeded = None  # callable(tile): its prediction is needed by no unwritten chunk any more
        self.before_save = None  # callable(): runs right before the state file is written

    # ---- queries --------------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return int(self.state.size)

    @property
    def finished(self) -> int:
        return int(np.count_nonzero((self.state == DONE) | (self.state == BACKGROUND)))

    @property
    def complete(self) -> bool:
        return self.finished == self.total

    def pending_batches(self) -> list[list[tuple[int, int]]]:
        """Batches holding at least one tile that still needs the model."""
        return [b for b in self.batches if any(self.state[t] == TODO for t in b)]

    def needs_model(self, tile) -> bool:
        return self.state[tile] == TODO

    def present_neighbours(self, i, j) -> list:
        return [n for n in self.grid.neighbours(i, j) if self.state[n] != BACKGROUND]

    def ready(self, candidates) -> list:
        """Predicted tiles among ``candidates`` whose neighbours are all predicted (or skipped)."""
        out = []
        for t in sorted(set(candidates)):
            if self.state[t] != PREDICTED:
                continue
            if all(self.state[n] in (PREDICTED, DONE, BACKGROUND) for n in self.grid.neighbours(*t)):
                out.append(t)
        return out

    def affected(self, tiles) -> set:
        """Tiles whose chunk a new prediction of ``tiles`` may complete."""
        return {n for t in tiles for n in self.grid.neighbours(*t)}

    # ---- updates --------------------------------------------------------------------------------
    def mark_predicted(self, tiles) -> None:
        for t in tiles:
            if self.state[t] == TODO:
                self.state[t] = PREDICTED

    def mark_done(self, tile, scores) -> None:
        self.state[tile] = DONE
        if scores is not None:
            self.scores[tile] = scores
        if self.mode == "blend":
            # neighbours (and the tile) whose every dependent chunk is now written can free their scratch
            for n in self.grid.neighbours(*tile):
                if n not in self._freed and all(self.state[m] in (DONE, BACKGROUND) for m in self.grid.neighbours(*n)):
                    self._to_free.append(n)
                    if self.on_unneeded is not None:
                        self.on_unneeded(n)

    def save(self, force: bool = False, every_s: float = 1.0) -> bool:
        """Persist state (atomically), then free scratch no longer needed. Throttled unless ``force``."""
        now = time.monotonic()
        if not force and now - self._last_save < every_s:
            return False
        if self.before_save is not None:
            self.before_save()
        self.store.save_state(self.state, self.scores)
        self._last_save = now
        for n in self._to_free:  # only after the state saying they are unneeded is on disk
            self.store.delete_scratch(*n)
            self._freed.add(n)
        self._to_free = []
        return True
