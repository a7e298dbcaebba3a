"""Class colours: the one palette and the colour notations every writer and layer builder shares.

A class ``k`` (0-based; label value ``k + 1`` in prediction stores) takes ``colors[k]`` when a model card or a
store gives one, in any notation a card accepts (``"#rrggbb"``, ``"#rrggbbaa"``, 0-1 or 0-255 RGB(A)
sequences), else ``PALETTE[k % 12]``. Prediction stores (``omero`` channel colours, ``image-label.colors``),
ROI exports and napari layers all call `class_rgba` / `class_hex`, so a class has the same colour in every
file and view. New model cards pad missing colours from ``CARD_PALETTE`` (`pad_class_colors`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# 0-255 RGB; class k without a colour of its own takes PALETTE[k % len(PALETTE)]
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
)

# what a trained model's card records for classes the user gave no colour (matplotlib's tab10)
CARD_PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
)


def color_to_rgba(color) -> tuple[int, int, int, int]:
    """One colour as 0-255 RGBA: ``"#rrggbb[aa]"`` (``#`` optional), or a 0-1 (every value <= 1) or 0-255
    RGB(A) sequence; alpha defaults to 255."""
    if isinstance(color, str):
        c = color.lstrip("#")
        vals = [int(c[i : i + 2], 16) for i in range(0, min(len(c), 8), 2)]
    else:
        vals = list(color)[:4]
        if max(vals) <= 1.0:
            vals = [int(round(v * 255)) for v in vals]
    vals = [int(v) for v in vals] + [255] * (4 - len(vals))
    return tuple(vals[:4])


def class_rgba(colors: Sequence | None, k: int) -> tuple[int, int, int, int]:
    """0-255 RGBA of class ``k``: ``colors[k]`` when given (see `color_to_rgba`), else the palette colour."""
    if colors and k < len(colors) and colors[k] is not None and len(colors[k]):
        return color_to_rgba(colors[k])
    return (*PALETTE[k % len(PALETTE)], 255)


def class_rgb(colors: Sequence | None, k: int) -> tuple[int, int, int]:
    """0-255 RGB of class ``k`` (`class_rgba` without alpha)."""
    return class_rgba(colors, k)[:3]


def class_hex(colors: Sequence | None, k: int) -> str:
    """Class ``k``'s colour as lower-case ``#rrggbb`` (napari layers, legends)."""
    return "#{:02x}{:02x}{:02x}".format(*class_rgb(colors, k))


def omero_hex(rgb) -> str:
    """0-255 RGB as an OME ``omero`` channel colour: upper-case ``RRGGBB`` without ``#``."""
    return "{:02X}{:02X}{:02X}".format(*rgb)


def hex_to_rgb(color: str) -> list[int]:
    """``"#rrggbb"`` / ``"RRGGBB"`` (longer strings: the first six digits) -> 0-255 ``[r, g, b]``."""
    c = str(color).lstrip("#")
    return [int(c[i : i + 2], 16) for i in (0, 2, 4)]


def unit_rgba_to_255(color) -> list[int]:
    """A 0-1 float RGB(A) colour (napari colormaps) -> 0-255 ``[r, g, b, a]`` (alpha 1 when missing), clipped."""
    rgba = np.asarray(color, dtype=float).reshape(-1)
    if rgba.size == 3:
        rgba = np.append(rgba, 1.0)
    return [int(round(v)) for v in np.clip(rgba[:4] * 255.0, 0, 255)]


def pad_class_colors(colors: Sequence | None, n: int) -> list:
    """``colors`` padded to ``n`` entries from ``CARD_PALETTE`` (cycled): the colours a new model card records."""
    out = list(colors or [])
    return out + [CARD_PALETTE[i % len(CARD_PALETTE)] for i in range(len(out), n)]
