"""``ModelCard``: what a model folder's ``muvit.yaml`` says about the model and how to feed it."""

from __future__ import annotations

import numbers
import re
from dataclasses import asdict, dataclass, field, fields

TASKS = ("encoder", "mae", "segmentation", "classification")
MAX_CROP = 8192  # px per side of a crop
MAX_CHANNELS = 512
MAX_CLASSES = 65535  # label values must fit uint16
MAX_LEVEL = 1 << 16
_HEX = re.compile(r"#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})")


@dataclass
class ModelCard:
    """Metadata stored next to the weights in ``muvit.yaml``.

    ``levels`` downsample factors, ``crop_size`` pixels per side of every level's crop, ``pixel_size``
    level-1 physical pixel size (e.g. micrometres, None if unknown), ``normalization`` a
    ``Normalizer.to_dict()``, ``head`` the head's constructor arguments, ``provenance`` free-form facts
    about training (data, epochs, date, code version).
    """

    task: str = "encoder"
    levels: tuple = (1, 4)
    crop_size: int | None = None
    in_channels: int = 1
    class_names: list = field(default_factory=list)
    class_colors: list = field(default_factory=list)
    normalization: dict = field(default_factory=dict)
    pixel_size: float | tuple | None = None
    head: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.task, str) or self.task not in TASKS:
            raise ValueError(f"task {self.task!r} is not known; use one of {', '.join(TASKS)}.")
        self.levels = _levels(self.levels)
        self.crop_size = None if self.crop_size is None else _int("crop_size", self.crop_size, 1, MAX_CROP)
        self.in_channels = _int("in_channels", self.in_channels, 1, MAX_CHANNELS)
        self.class_names = _names(self.class_names)
        self.class_colors = _colors(self.class_colors)
        for name in ("normalization", "head", "provenance"):
            if getattr(self, name) is None:
                setattr(self, name, {})
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"model card field {name!r} must be a mapping of settings, "
                                 f"not {_shown(getattr(self, name))}.")
        self.pixel_size = _pixel_size(self.pixel_size)
        n = self.head.get("num_classes")
        if n is not None:
            n = _int("head.num_classes", n, 1, MAX_CLASSES)
            if self.class_names and len(self.class_names) != n:
                raise ValueError(f"model card field 'class_names' lists {len(self.class_names)} names but the head "
                                 f"predicts {n} classes; give one name per class.")

    def to_dict(self) -> dict:
        """Plain YAML-safe dict (tuples become lists)."""

        def plain(v):
            if isinstance(v, (tuple, list)):
                return [plain(i) for i in v]
            if isinstance(v, dict):
                return {str(k): plain(i) for k, i in v.items()}
            return v

        return plain(asdict(self))

    @classmethod
    def from_dict(cls, d: dict, source: str = "muvit.yaml") -> ModelCard:
        """Build from a dict; unknown keys raise ``ValueError`` naming them and ``source``."""
        if not isinstance(d, dict):
            raise ValueError(f"{source} must hold a mapping of model card fields, not {type(d).__name__}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{source} has unknown keys {unknown}; known keys are {sorted(known)}.")
        try:
            return cls(**d)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None


# ---- field checks: one sentence naming the field, the value and what is accepted --------------------------
def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= int(value) <= hi:
        raise ValueError(f"model card field {name!r} is {_shown(value)}; it must be a whole number from {lo} to {hi}.")
    return int(value)


def _levels(value) -> tuple:
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise ValueError(f"model card field 'levels' is {_shown(value)}; it must be a list of downsample factors "
                         "such as [1, 8, 32].")
    levels = tuple(value)
    ok = 0 < len(levels) <= 16 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and 1 <= v <= MAX_LEVEL for v in levels)
    if not ok or list(levels) != sorted(set(levels)):
        raise ValueError(f"model card field 'levels' is {_shown(value)}; it must be 1 to 16 distinct ascending "
                         "whole downsample factors such as [1, 8, 32].")
    return tuple(int(v) for v in levels)


def _names(value) -> list:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"model card field 'class_names' is {_shown(value)}; it must be a list of class names "
                         "(non-empty text).")
    if len(value) > MAX_CLASSES or len(set(value)) != len(value):
        raise ValueError(f"model card field 'class_names' is {_shown(value)}; the names must be distinct.")
    return list(value)


def _colors(value) -> list:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"model card field 'class_colors' is {_shown(value)}; it must be a list of colours.")
    for c in value:
        if c is None or isinstance(c, str) and _HEX.fullmatch(c.strip()):
            continue
        if (isinstance(c, (list, tuple)) and len(c) in (3, 4) and all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)):
            continue
        raise ValueError(f"model card field 'class_colors' has the colour {_shown(c)}; use '#rrggbb' or 3-4 numbers "
                         "from 0 to 1 or 0 to 255.")
    return list(value)


def _pixel_size(value):
    if value is None:
        return None
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not 1 <= len(values) <= 3 or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < v < float("inf") for v in values):
        raise ValueError(f"model card field 'pixel_size' is {_shown(value)}; it must be a positive number "
                         "(or one per axis), or empty when unknown.")
    return tuple(float(v) for v in values) if isinstance(value, (list, tuple)) else float(value)
