"""Connected components counted exactly over an image read in blocks, with memory bounded by one row.

Each block is labelled on its own (any labelling of same-value regions, e.g. `skimage.measure.label`);
components that touch across a block's top or left border (and across its corners when 8-connected) are
joined as graph edges. After each row of blocks the graph of that row's components plus the components still
open from the row above is solved (`scipy.sparse.csgraph.connected_components`): a component that does not
reach the row's last pixel row is finished and counted (when it has at least ``min_pixels`` pixels); the
others carry on, renumbered. Memory: one pixel row of component ids plus the components of one row of
blocks, whatever the image's height. Counts equal labelling the whole image at once (tests/test_measure.py).
"""

from __future__ import annotations

import numpy as np


class StreamingComponents:
    """Connected components of a label image fed one row of blocks at a time (see the module docstring).

    ``width``: pixels per image row; ``n_classes``: labels ``1..n_classes`` (0 = none); components of at
    least ``min_pixels`` pixels are counted per label in ``objects`` ``(n_classes + 1,)``. Per row of blocks:
    `start_row`, `add_block(local, vals, x0)` left to right (``local``: the block's own component labelling,
    ``vals``: its label values, ``x0``: its first column), `end_row`; then `finish`.
    """

    def __init__(self, width, n_classes, min_pixels, connectivity):
        self.width, self.min_pixels = width, min_pixels
        self.offsets = (-1, 0, 1) if connectivity == 8 else (0,)
        self.objects = np.zeros(n_classes + 1, np.int64)
        self.strip_ids = np.zeros(width, np.int64)  # component id of each pixel of the last row read (0: none)
        self.strip_vals = np.zeros(width, np.int64)
        self.cls = np.zeros(1, np.int64)  # per id (id 0 = nothing)
        self.size = np.zeros(1, np.int64)

    def start_row(self):
        self.new_cls, self.new_size, self.edges = [self.cls], [self.size], []
        self.next_id = len(self.cls)
        self.new_strip_ids = np.zeros(self.width, np.int64)
        self.new_strip_vals = np.zeros(self.width, np.int64)
        self.left = None  # (ids, vals) of the previous block's last column in this row

    def add_block(self, local, vals, x0):
        n = int(local.max())
        ids = np.where(local > 0, local + (self.next_id - 1), 0)
        if n:
            cls = np.zeros(n + 1, np.int64)
            cls[local.ravel()] = vals.ravel()
            self.new_cls.append(cls[1:])
            self.new_size.append(np.bincount(local.ravel(), minlength=n + 1)[1:])
        h, w = ids.shape
        cols = np.arange(w)
        for d in self.offsets:  # top border: this block's first row against the last row read above it
            xn = x0 + cols + d
            ok = (xn >= 0) & (xn < self.width)
            self._join(ids[0, ok], vals[0, ok], self.strip_ids[xn[ok]], self.strip_vals[xn[ok]])
        if self.left is not None:  # left border, rows inside this block (the corner above is the top border's)
            lids, lvals = self.left
            rows = np.arange(h)
            for d in self.offsets:
                rn = rows + d
                ok = (rn >= 0) & (rn < h)
                self._join(ids[ok, 0], vals[ok, 0], lids[rn[ok]], lvals[rn[ok]])
        self.left = (ids[:, -1].copy(), vals[:, -1].copy())
        self.new_strip_ids[x0 : x0 + w] = ids[-1]
        self.new_strip_vals[x0 : x0 + w] = vals[-1]
        self.next_id += n

    def _join(self, a, av, b, bv):
        keep = (a > 0) & (b > 0) & (av == bv)
        if keep.any():
            self.edges.append(np.stack([a[keep], b[keep]]))

    def end_row(self):
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        cls = np.concatenate(self.new_cls)
        size = np.concatenate(self.new_size)
        n = len(cls)
        e = np.concatenate(self.edges, axis=1) if self.edges else np.zeros((2, 0), np.int64)
        graph = coo_matrix((np.ones(e.shape[1], np.int8), (e[0], e[1])), shape=(n, n))
        _, comp = connected_components(graph, directed=False)
        n_comp = int(comp.max()) + 1
        comp_size = np.bincount(comp, weights=size, minlength=n_comp).astype(np.int64)
        comp_cls = np.zeros(n_comp, np.int64)
        comp_cls[comp] = cls
        alive = np.zeros(n_comp, bool)
        alive[comp[self.new_strip_ids[self.new_strip_ids > 0]]] = True
        closed = ~alive
        closed[comp[0]] = False  # id 0 is "nothing"
        self._count(comp_cls[closed], comp_size[closed])
        live = np.flatnonzero(alive)
        remap = np.zeros(n_comp, np.int64)
        remap[live] = np.arange(1, len(live) + 1)
        self.strip_ids = np.where(self.new_strip_ids > 0, remap[comp[self.new_strip_ids]], 0)
        self.strip_vals = self.new_strip_vals
        self.cls = np.concatenate([[0], comp_cls[live]])
        self.size = np.concatenate([[0], comp_size[live]])

    def finish(self):
        self._count(self.cls[1:], self.size[1:])
        self.cls, self.size = np.zeros(1, np.int64), np.zeros(1, np.int64)

    def _count(self, cls, size):
        big = size >= self.min_pixels
        self.objects += np.bincount(cls[big], minlength=len(self.objects))[: len(self.objects)]
