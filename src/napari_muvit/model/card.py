"""``ModelCard``: what a model folder's ``muvit.yaml`` says about the model and how to feed it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

TASKS = ("encoder", "mae", "segmentation", "classification")


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
        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r} is not known; use one of {', '.join(TASKS)}.")
        self.levels = tuple(self.levels)
        if isinstance(self.pixel_size, list):
            self.pixel_size = tuple(self.pixel_size)

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
        return cls(**d)
