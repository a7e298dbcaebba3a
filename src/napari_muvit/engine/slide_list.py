"""A cohort as a list: each slide's size, pixel size, format and the state of its prediction store.

Slides come from `batch.expand_slides` (a folder's slide files, or a ``.txt`` list), stores are
``out_dir/<slide stem>.zarr`` as `batch.plan_outputs` names them, and a store's state is read through
`OutputStore` (``none``: no store; ``partial``: a store whose run has not finished; ``complete``: the
store's ``napari_muvit.complete`` is true; ``unreadable``: a folder there that is not a prediction store).
Opening a slide reads its header only (`open_pyramid` is lazy), never pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .batch import expand_slides, slide_stem

STATES = ("none", "partial", "complete", "unreadable")


@dataclass
class SlideInfo:
    """One slide of a list. ``shape``: level-0 ``(Y, X)`` px; ``pixel_size``: level-0 ``(y, x)`` in ``unit``;
    ``error``: why the slide could not be opened ('' when it could)."""

    path: Path
    store: Path
    state: str
    format: str
    shape: tuple[int, int] | None = None
    pixel_size: tuple[float, float] | None = None
    unit: str | None = None
    n_channels: int | None = None
    rgb: bool = False
    error: str = ""

    @property
    def name(self) -> str:
        return self.path.name

    def size_text(self) -> str:
        """``"40000 x 30000 px (10.0 x 7.5 mm)"``-style size (Y x X)."""
        if self.shape is None:
            return ""
        text = f"{self.shape[0]} x {self.shape[1]} px"
        if self.pixel_size is not None and self.unit in ("micrometer", "µm", "um"):
            h, w = (n * p / 1000.0 for n, p in zip(self.shape, self.pixel_size))
            text += f" ({h:.2f} x {w:.2f} mm)"
        return text

    def pixel_text(self) -> str:
        if self.pixel_size is None or not self.unit:  # a scale without a unit is no physical size
            return "unknown"
        y, x = self.pixel_size
        unit = "µm" if self.unit in ("micrometer", "µm", "um") else self.unit
        return f"{x:.4g} {unit}" if abs(y - x) <= 1e-6 * max(x, y) else f"{y:.4g} x {x:.4g} {unit}"


def output_state(store) -> str:
    """``none`` / ``partial`` / ``complete`` / ``unreadable`` for a prediction store path (see the module)."""
    from .store import OutputStore

    store = Path(store)
    if not store.exists():
        return "none"
    try:
        return "complete" if OutputStore.open(store).complete else "partial"
    except (ValueError, FileNotFoundError):
        return "unreadable"


def describe_slide(path, out_dir) -> SlideInfo:
    """Header facts of one slide and the state of ``out_dir/<stem>.zarr``; a slide that cannot be opened keeps
    its error sentence instead of raising."""
    from napari_muvit.data import open_pyramid
    from napari_muvit.data.formats import format_name

    path = Path(path)
    store = Path(out_dir) / f"{slide_stem(path)}.zarr"
    info = SlideInfo(path=path, store=store, state=output_state(store), format=format_name(path))
    try:
        pyr = open_pyramid(path)
    except (ValueError, FileNotFoundError, OSError) as exc:
        info.error = str(exc)
        return info
    info.shape = tuple(int(n) for n in pyr.shape[-2:])
    info.pixel_size = tuple(float(p) for p in pyr.pixel_size[-2:]) if pyr.pixel_size else None
    info.unit, info.n_channels, info.rgb = pyr.unit, pyr.n_channels, pyr.rgb
    fmt = pyr.metadata.get("format") if isinstance(pyr.metadata, dict) else None
    if isinstance(fmt, str) and fmt and info.format in ("TIFF", "BigTIFF"):  # e.g. a Philips .tiff
        info.format = fmt
    return info


def default_out_dir(source) -> Path:
    """Where a list's stores are looked for when no folder is given: the folder (or the list file's folder)."""
    source = Path(source)
    return source if source.is_dir() else source.parent


def list_slides(source, out_dir=None) -> list[SlideInfo]:
    """The slides of a folder or ``.txt`` list (`batch.expand_slides`), each described (`describe_slide`).

    Raises ValueError / FileNotFoundError with one sentence when the source names no slide.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"slide folder or list {str(source)!r} does not exist; pick a folder of slides "
                                "or a .txt file with one slide path per line.")
    if not source.is_dir() and source.suffix.lower() != ".txt":
        raise ValueError(f"{str(source)!r} is neither a folder nor a .txt list; pick a folder of slides or a .txt "
                         "file with one slide path per line.")
    out = Path(out_dir) if out_dir else default_out_dir(source)
    # prediction stores beside the slides (the default outputs folder) are outputs, not slides
    slides = [p for p in expand_slides([source]) if not (p.name.lower().endswith(".zarr") and _is_store(p))]
    return [describe_slide(p, out) for p in slides]


def _is_store(path: Path) -> bool:
    return output_state(path) in ("partial", "complete")


THUMB_SIDE = 64  # px: longest side of a list thumbnail
MAX_THUMB_READ_PX = 2048 * 2048  # a thumbnail reads at most this many source pixels, whatever the slide size


def thumbnail(source, side: int = THUMB_SIDE, max_read_px: int = MAX_THUMB_READ_PX):
    """A small RGB preview ``(h, w, 3) uint8`` (longest side <= ``side``) of a slide path or `Pyramid`.

    Read from the coarsest stored level that gives it (area-averaged), and only when that read costs at
    most ``max_read_px`` source pixels: a slide stored at full resolution only (no pyramid) gets None
    rather than a whole-slide read. RGB slides keep their colours; other slides show their first three
    channels (one channel: grey), each scaled between its 1st and 99th percentile.
    """
    import numpy as np

    from napari_muvit.data import open_pyramid

    pyr = open_pyramid(source) if isinstance(source, (str, Path)) else source
    if pyr.spatial_ndim != 2:
        return None
    h, w = pyr.shape
    f = 1
    while max(h, w) / f > side:
        f *= 2
    target = pyr._target_factor(f)
    stored = pyr._stored_source_for(target)
    sf = pyr.factors[stored]
    if (h // sf[0]) * (w // sf[1]) > max_read_px:
        return None
    shape = (max(1, h // f), max(1, w // f))
    img, _ = pyr.read_window(f, (0, 0), shape)
    if pyr.rgb:
        return np.clip(np.rint(np.moveaxis(img[:3], 0, -1)), 0, 255).astype(np.uint8)
    chans = img[:3] if img.shape[0] >= 3 else np.repeat(img[:1], 3, axis=0)
    out = np.empty(chans.shape, np.float32)
    for k, c in enumerate(chans):
        lo, hi = np.percentile(c, (1, 99))
        out[k] = np.clip((c - lo) / (hi - lo), 0, 1) if hi > lo else 0.0
    return np.rint(np.moveaxis(out, 0, -1) * 255).astype(np.uint8)
