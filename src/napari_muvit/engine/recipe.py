"""`Recipe`: one serialisable run configuration shared by the CLI, the widgets and every output store.

A recipe names *what* to run (source slide, model, levels, region) and *how* (tile size, overlap,
normalisation, device, precision, batch size, distribution, output). Unset values (``None`` /
``"auto"``) are resolved against the model card and the machine when the run starts; the resolved
recipe is what the output store records.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class RecipeFile:
    """What `Recipe` and `TrainRecipe` share: the dict/JSON/YAML round trip, files and ``replace``.

    A subclass is a dataclass with ``to_dict()`` (plain JSON-compatible values), ``from_json``/``from_yaml``
    and ``load``; ``_KIND`` names it in error sentences, ``_YAML`` holds its ``yaml.safe_dump`` options.
    """

    _KIND = "recipe"
    _YAML: dict = {"sort_keys": True}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown {cls._KIND} key(s) {', '.join(unknown)}; known keys are "
                             f"{', '.join(sorted(names))}.")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), **self._YAML)

    def save(self, path: str | Path) -> Path:
        """Write as YAML (``.yaml``/``.yml``) or JSON (anything else), atomically."""
        from .safety import atomic_write_text

        path = Path(path)
        return atomic_write_text(path, self.to_yaml() if path.suffix in (".yaml", ".yml") else self.to_json())

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclass
class Recipe(RecipeFile):
    """A prediction run.

    Attributes
    ----------
    source : path of the slide (OME-Zarr, TIFF, SVS, ...); may be empty when a `Pyramid` is passed in.
    model : model folder path or ``"demo"``.
    levels : downsample factors fed to the model, ascending, e.g. ``(1, 4, 16)``; ``None`` = the model's.
    region : ``(y0, y1, x0, x1)`` in world (level-1) px, half-open; ``None`` = the whole slide.
    tile : level-1 crop size in px (the model's crop size ``S``); ``None`` = the model card's.
    overlap : px shared by neighbouring tiles (even, at most ``tile // 2``); ``None`` = ``tile // 4``.
    normalization : `Normalizer.to_dict()` payload; ``None`` = the model card's, else percentiles.
    device : ``auto|cpu|cuda|mps`` (``cuda:1`` accepted).  precision : ``auto|fp32|bf16|fp16``.
    batch_size : tiles per model call, or ``"auto"``.
    foreground : skip tiles without tissue (marked ``background`` in the tile table).
    mask : path of a 2D mask image (.npy, .tif, zarr array) covering the slide at a whole downsample
    factor (its shape = slide shape / factor); tiles with no non-zero mask pixel are skipped like background.
    out : output OME-Zarr store path.  resume / overwrite : what to do when ``out`` exists.
    prob_dtype : how probabilities are stored: ``uint8`` (``p = v / 255``, default), ``float16``, ``float32``
    or ``none`` (labels and tile scores only).
    output_level : world px per output pixel, a power of two (1 = full resolution, 4 = 4x downsampled).
    workers : local dask worker processes (0 = run in this process).  scheduler : dask address.
    """

    source: str = ""
    model: str = "demo"
    levels: tuple[int, ...] | None = None
    region: tuple[int, int, int, int] | None = None
    tile: int | None = None
    overlap: int | None = None
    normalization: dict | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | str = "auto"
    foreground: bool = False
    mask: str | None = None
    strict: bool = False  # refuse a source chunk missing from its zarr store instead of reading it as zeros
    out: str = ""
    prob_dtype: str = "uint8"
    output_level: int = 1
    resume: bool = False
    overwrite: bool = False
    workers: int = 0
    scheduler: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    # ---- validation -------------------------------------------------------------------------
    def validate(self) -> Recipe:
        """Normalise types and check every field; raises ``ValueError`` with one readable sentence."""
        self.source = "" if self.source is None else str(self.source)
        self.model = "demo" if self.model in (None, "") else str(self.model)
        self.out = "" if self.out is None else str(self.out)
        self.strict = bool(self.strict)
        if self.levels is not None:
            self.levels = parse_levels(self.levels)
        if self.region is not None:
            self.region = parse_region(self.region)
        if self.tile is not None:
            if not _is_int(self.tile) or int(self.tile) < 2:
                raise ValueError(f"tile {self.tile!r} must be a whole number of pixels such as 256.")
            self.tile = int(self.tile)
        if self.overlap is not None:
            if not _is_int(self.overlap) or int(self.overlap) < 0 or int(self.overlap) % 2:
                raise ValueError(f"overlap {self.overlap!r} must be an even number of pixels >= 0, e.g. 32.")
            self.overlap = int(self.overlap)
            if self.tile is not None and self.overlap > self.tile // 2:
                raise ValueError(
                    f"overlap {self.overlap} is more than half the tile size {self.tile}; use at most {self.tile // 2 // 2 * 2}."
                )
        dev = str(self.device)
        if dev.split(":")[0] not in DEVICES:
            raise ValueError(f"device {self.device!r} is not one of {', '.join(DEVICES)} (or cuda:N).")
        self.device = dev
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}.")
        if self.batch_size != "auto":
            if not _is_int(self.batch_size) or int(self.batch_size) < 1:
                raise ValueError(f"batch size {self.batch_size!r} must be a positive whole number or 'auto'.")
            self.batch_size = int(self.batch_size)
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other; choose one of them.")
        if not _is_int(self.workers) or int(self.workers) < 0:
            raise ValueError(f"workers {self.workers!r} must be a whole number >= 0 (0 = run in this process).")
        self.workers = int(self.workers)
        if self.workers and self.scheduler:
            raise ValueError("give either workers (a local cluster) or scheduler (an existing cluster), not both.")
        from .output_layout import check_output_level, check_prob_dtype

        self.prob_dtype = check_prob_dtype(self.prob_dtype)
        self.output_level = check_output_level(self.output_level)
        self.foreground = bool(self.foreground)
        self.mask = None if self.mask in (None, "") else str(self.mask)
        self.extra = dict(self.extra or {})
        return self

    # ---- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        for key in ("levels", "region"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_yaml(cls, text: str) -> Recipe:
        d = yaml.safe_load(text)
        if not isinstance(d, dict):
            raise ValueError("a recipe file must hold a mapping of keys such as source, model, out.")
        return cls.from_dict(d)

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"recipe file {str(path)!r} does not exist; give a .yaml or .json recipe.")
        text = path.read_text()
        return cls.from_yaml(text) if path.suffix in (".yaml", ".yml") else cls.from_json(text)


def _is_int(v) -> bool:
    try:
        return float(v) == int(float(v)) and not isinstance(v, bool)
    except (TypeError, ValueError):
        return False


def parse_levels(levels) -> tuple[int, ...]:
    """``"1,8,32"`` or a sequence -> ``(1, 8, 32)``; must be ascending whole factors dividing each other."""
    if isinstance(levels, str):
        try:
            levels = [float(v) for v in levels.replace(" ", "").split(",") if v]
        except ValueError as exc:
            raise ValueError(f"levels {levels!r} must be comma-separated whole numbers such as 1,8,32.") from exc
    from napari_muvit.data.geometry import validate_levels

    return validate_levels(levels)


def parse_region(region) -> tuple[int, int, int, int] | None:
    """``"y0:y1,x0:x1"``, ``"all"`` or a 4-sequence -> ``(y0, y1, x0, x1)`` world px, or ``None`` (whole slide)."""
    if region is None:
        return None
    if isinstance(region, str):
        text = region.strip().lower()
        if text in ("", "all"):
            return None
        try:
            ys, xs = text.split(",")
            y0, y1 = ys.split(":")
            x0, x1 = xs.split(":")
            region = (int(y0), int(y1), int(x0), int(x1))
        except ValueError as exc:
            raise ValueError(f"region {region!r} must look like y0:y1,x0:x1 (world pixels) or 'all'.") from exc
    try:
        vals = [float(v) for v in region]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"region {region!r} must be (y0, y1, x0, x1) in world pixels.") from exc
    if len(vals) != 4 or not all(v == int(v) for v in vals):
        raise ValueError(f"region {region!r} must be four whole numbers (y0, y1, x0, x1).")
    y0, y1, x0, x1 = (int(v) for v in vals)
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"region {region!r} is empty; y1 must exceed y0 and x1 must exceed x0.")
    return (y0, y1, x0, x1)
