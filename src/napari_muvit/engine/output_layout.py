"""Where a segmentation run's output pixels and chunks sit (`OutputLayout`), and the checks of the output
choices (probability dtype, output level).

Pure Python and numpy-free, so a recipe can be checked (e.g. on a GUI thread) without importing torch; the
stitching itself is `engine/stitch.py`, whose docstring describes the layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PROB_DTYPES = ("uint8", "float16", "float32", "none")
DEFAULT_CHUNK = (128, 8192)  # output px per level-0 chunk (1 Mpx per file); short bands keep memory low


def check_output_level(level) -> int:
    """``level`` as an int if it is a power of two >= 1; else one sentence."""
    try:
        n = int(level)
        ok = float(level) == n and n >= 1 and n & (n - 1) == 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"output level {level!r} must be a power of two such as 1, 2, 4 or 8.")
    return n


def check_prob_dtype(dtype) -> str:
    d = str(dtype).lower()
    if d not in PROB_DTYPES:
        raise ValueError(f"probability dtype {dtype!r} is not one of {', '.join(PROB_DTYPES)}.")
    return d


@dataclass(frozen=True)
class OutputLayout:
    """Where a segmentation run's output pixels and chunks sit (all in world = level-1 px unless stated).

    slide_shape : ``(H, W)`` of the slide.  region : ``(y0, y1, x0, x1)`` predicted.  level : ``N``.
    chunk : requested ``(ch, cw)`` output px (clipped to the image by `chunks`).  prob_dtype : see module.
    """

    slide_shape: tuple[int, int]
    region: tuple[int, int, int, int]
    level: int = 1
    chunk: tuple[int, int] = DEFAULT_CHUNK
    prob_dtype: str = "uint8"

    @property
    def shape(self) -> tuple[int, int]:
        """Level-0 output shape ``(h, w)``: the whole slide at ``N`` world px per pixel."""
        return (math.ceil(self.slide_shape[0] / self.level), math.ceil(self.slide_shape[1] / self.level))

    @property
    def chunks(self) -> tuple[int, int]:
        return (min(self.chunk[0], self.shape[0]), min(self.chunk[1], self.shape[1]))

    @property
    def band_px(self) -> int:
        """World rows per band."""
        return self.chunks[0] * self.level

    def bands(self) -> range:
        """Bands the region overlaps, top to bottom."""
        y0, y1 = self.region[:2]
        return range(y0 // self.band_px, (y1 - 1) // self.band_px + 1)

    def band_rows(self, b: int) -> tuple[int, int]:
        """Region-relative level-1 rows ``[a, b)`` of band ``b`` inside the region."""
        y0, y1 = self.region[:2]
        return max(b * self.band_px, y0) - y0, min((b + 1) * self.band_px, y1) - y0

    def band_of(self, rel_row: int) -> int:
        return (rel_row + self.region[0]) // self.band_px

    def output_box(self) -> tuple[int, int, int, int]:
        """Level-0 output px ``(r0, r1, c0, c1)`` covering the region (world-aligned, rounded outwards)."""
        y0, y1, x0, x1 = self.region
        n = self.level
        return (y0 // n, -(-y1 // n), x0 // n, -(-x1 // n))

    def to_dict(self) -> dict:
        return {"version": 2, "extent": "slide", "level": self.level, "chunks": list(self.chunks),
                "prob_dtype": self.prob_dtype}
