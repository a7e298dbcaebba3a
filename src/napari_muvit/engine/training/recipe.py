"""`TrainRecipe`: one serialisable configuration of a training run, shared by the CLI, the docks and scripts.

A training recipe names *how* to train (schedule, optimiser, geometry, augmentation, seed, device); the
data (slides, annotations, base model, output folder) and the callbacks are the arguments of
:func:`~napari_muvit.engine.training.finetune` and :func:`~napari_muvit.engine.training.pretrain`. ``task``
tells which loop a recipe is for: ``"segmentation"`` / ``"classification"`` (fine-tuning) or ``"mae"``
(pre-training). Unset values (``None``) are resolved when the run starts, against the task and the base
model; every run writes the resolved recipe to ``out/training/recipe.yaml``, so
``napari-muvit finetune ... --recipe out/training/recipe.yaml`` repeats it.

Example (YAML)::

    task: segmentation
    levels: [1, 8]
    size: 256
    epochs: 10
    batch_size: 8
    lr: 0.001
    seed: 0
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..recipe import DEVICES, PRECISIONS, RecipeFile, _is_int, parse_levels

RECIPE_NAME = "recipe.yaml"  # the resolved recipe of a run, in ``out/training/``
FINETUNE_TASKS = ("segmentation", "classification")
TASKS = (*FINETUNE_TASKS, "mae")
HEADS = ("unetr", "probe")
CLASS_WEIGHTS = ("sqrt", "balanced")
NORMALIZATIONS = ("percentile", "fixed", "none")

#: defaults that depend on the task (a ``None`` field takes these when the run starts)
FINETUNE_LR, PRETRAIN_LR = 1e-3, 1.5e-4
FINETUNE_EPOCHS = 10
DEFAULT_SIZE = 256  # pre-training, and fine-tuning from a base model whose card names no crop size
PRETRAIN_LEVELS = (1, 8, 32)

# fields only one kind of run reads: a value other than the default for the other kind is refused
PRETRAIN_ONLY = ("steps", "model_config", "nested_shift", "checkpoint_every", "preview_every")
FINETUNE_ONLY = ("steps_per_epoch", "encoder_lr", "head", "train_encoder", "class_names", "class_colors",
                 "background_class", "class_weights", "val_fraction")


@dataclass
class TrainRecipe(RecipeFile):
    """A training run's settings (everything but the data, the output folder and the callbacks).

    Attributes
    ----------
    task : ``segmentation`` or ``classification`` (fine-tuning) or ``mae`` (pre-training).
    levels : downsample factors, ascending, e.g. ``(1, 8, 32)``; ``None`` = the base model's (pre-training
        without a base: ``(1, 8, 32)``).
    size : crop side in px at every level; ``None`` = the base model's (else 256).
    epochs : fine-tuning: passes (whole number, default 10); pre-training: passes over the foreground area
        in level-1 crops (may be fractional; default 1 when ``steps`` is unset).
    steps : pre-training only: optimisation steps (instead of ``epochs``).
    steps_per_epoch : fine-tuning only; ``None`` = from the number of labelled pixels / ROIs (4 to 500).
    batch_size : crops per optimisation step.
    lr : peak learning rate; ``None`` = 1e-3 for fine-tuning, 1.5e-4 for pre-training.
    encoder_lr : fine-tuning with ``train_encoder``: the encoder's rate; ``None`` = ``lr / 10``.
    weight_decay, clip_grad : AdamW weight decay; gradient-norm clip.
    warmup_steps : linear warm-up steps; ``None`` = pre-training ``min(500, steps // 10)``, fine-tuning
        ``min(steps_per_epoch, steps // 10)`` (at least 1).
    head : segmentation head, ``unetr`` or ``probe``.  train_encoder : also update the encoder.
    class_names, class_colors : names for label values 1, 2, ... (or the ROI classes) and their colours.
    background_class : a foreign dense label image whose 0 is a real class: its name (values move up by one).
    class_weights : ``None``, ``"sqrt"``, ``"balanced"`` or one non-negative number per class.
    val_fraction : share of the labelled regions (or ROIs) held out for validation, in [0, 1).
    normalization : ``percentile``, ``fixed``, ``none`` or a `Normalizer.to_dict()` payload.
    augment : flips, rotations and intensity jitter.  nested_shift : pre-training context-crop jitter.
    dihedral : with ``augment``, the flips and quarter turns (``False``: intensity jitter only). Turn it off
        when a class names a direction ("landmark above", "apical side"): a turn of the crops changes the
        true class, so turned crops would teach every direction for every label.
    model_config : pre-training only: `MuViTMAE` keyword arguments over the small default MAE.
    checkpoint_every, preview_every : pre-training: steps between checkpoints / preview images
        (``preview_every`` ``None`` = ``checkpoint_every``; 0 = no previews).
    seed : random seed (sampling, augmentation, initialisation).
    device : ``auto|cpu|cuda|mps`` (``cuda:1`` accepted).  precision : ``auto|fp32|bf16|fp16``.
    threads : torch CPU threads; ``None`` = ``$NAPARI_MUVIT_THREADS`` or torch's own choice.
    """

    _KIND = "training recipe"  # not fields (no annotation): RecipeFile's error wording and YAML layout
    _YAML = {"sort_keys": False, "default_flow_style": None}

    task: str = "segmentation"
    levels: tuple[int, ...] | None = None
    size: int | None = None
    epochs: float | None = None
    steps: int | None = None
    steps_per_epoch: int | None = None
    batch_size: int = 8
    lr: float | None = None
    encoder_lr: float | None = None
    weight_decay: float = 0.05
    warmup_steps: int | None = None
    clip_grad: float = 1.0
    head: str = "unetr"
    train_encoder: bool = False
    class_names: list[str] | None = None
    class_colors: list[str] | None = None
    background_class: str | None = None
    class_weights: str | list[float] | None = None
    val_fraction: float = 0.2
    normalization: str | dict = "percentile"
    augment: bool = True
    dihedral: bool = True
    nested_shift: float = 1.0
    model_config: dict = field(default_factory=dict)
    checkpoint_every: int = 200
    preview_every: int | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None

    def __post_init__(self):
        self.validate()

    # ---- validation -------------------------------------------------------------------------
    def validate(self) -> TrainRecipe:
        """Normalise types and check every field; raises ``ValueError`` with one readable sentence."""
        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r} is not one of {', '.join(TASKS)}.")
        if self.levels is not None:
            self.levels = parse_levels(self.levels)
        if self.size is not None:
            self.size = _whole(self.size, "crop size", 1, "e.g. 256")
        if self.epochs is not None:
            if self.is_pretraining:
                if not _number(self.epochs) or not float(self.epochs) > 0:
                    raise ValueError(f"epochs {self.epochs!r} must be a number above 0, e.g. 1 or 0.5.")
                self.epochs = float(self.epochs)
            else:
                self.epochs = _whole(self.epochs, "epochs", 1, "e.g. 10")
        for name in ("steps", "steps_per_epoch"):
            if getattr(self, name) is not None:
                setattr(self, name, _whole(getattr(self, name), name.replace("_", " "), 1, "e.g. 100"))
        if self.steps is not None and self.epochs is not None:
            raise ValueError(f"steps {self.steps} and epochs {self.epochs:g} both set the run length; give one of them.")
        self.batch_size = _whole(self.batch_size, "batch size", 1, "e.g. 8")
        for name in ("lr", "encoder_lr"):
            value = getattr(self, name)
            if value is not None:
                if not _number(value) or not float(value) > 0:
                    raise ValueError(f"{_words(name)} {value!r} must be a number above 0, e.g. 0.001.")
                setattr(self, name, float(value))
        if not _number(self.weight_decay) or float(self.weight_decay) < 0:
            raise ValueError(f"weight decay {self.weight_decay!r} must be a number >= 0, e.g. 0.05.")
        self.weight_decay = float(self.weight_decay)
        if not _number(self.clip_grad) or not float(self.clip_grad) > 0:
            raise ValueError(f"clip grad {self.clip_grad!r} must be a gradient norm above 0, e.g. 1.0.")
        self.clip_grad = float(self.clip_grad)
        if self.warmup_steps is not None:
            self.warmup_steps = _whole(self.warmup_steps, "warmup steps", 0, "e.g. 100")
        if self.head not in HEADS:
            raise ValueError(f"head {self.head!r} is not one of {', '.join(HEADS)}.")
        self.train_encoder = _flag(self.train_encoder, "train_encoder")
        self.augment = _flag(self.augment, "augment")
        self.dihedral = _flag(self.dihedral, "dihedral")
        self.class_names = _names(self.class_names, "class names")
        self.class_colors = _names(self.class_colors, "class colours")
        if self.background_class is not None:
            if not isinstance(self.background_class, str) or not self.background_class.strip():
                raise ValueError(f"background class {self.background_class!r} must be a class name such as 'background'.")
        self._check_class_weights()
        if not _number(self.val_fraction) or not 0 <= float(self.val_fraction) < 1:
            raise ValueError(f"val fraction {self.val_fraction!r} must be a share in [0, 1), e.g. 0.2.")
        self.val_fraction = float(self.val_fraction)
        if isinstance(self.normalization, dict):
            from napari_muvit.data import Normalizer

            Normalizer.from_dict(self.normalization)  # its own one-sentence error
            self.normalization = dict(self.normalization)
        elif self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization {self.normalization!r} is not one of {', '.join(NORMALIZATIONS)} "
                             "or a normaliser's dict.")
        if not _number(self.nested_shift) or float(self.nested_shift) < 0:
            raise ValueError(f"nested shift {self.nested_shift!r} must be a number >= 0, e.g. 1.0.")
        self.nested_shift = float(self.nested_shift)
        self._check_model_config()
        self.checkpoint_every = _whole(self.checkpoint_every, "checkpoint every", 1, "e.g. 200 steps")
        if self.preview_every is not None:
            self.preview_every = _whole(self.preview_every, "preview every", 0, "e.g. 200 steps, or 0 for none")
        if not _is_int(self.seed) or int(self.seed) < 0:
            raise ValueError(f"seed {self.seed!r} must be a whole number >= 0, e.g. 0.")
        self.seed = int(self.seed)
        dev = str(self.device)
        if dev.split(":")[0] not in DEVICES:
            raise ValueError(f"device {self.device!r} is not one of {', '.join(DEVICES)} (or cuda:N).")
        self.device = dev
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}.")
        if self.threads is not None:
            self.threads = _whole(self.threads, "threads", 1, "e.g. 4")
        self._check_task_fields()
        return self

    def _check_class_weights(self) -> None:
        w = self.class_weights
        if w is None or w in CLASS_WEIGHTS:
            return
        if isinstance(w, (list, tuple)) and w and all(_number(v) and float(v) >= 0 for v in w):
            self.class_weights = [float(v) for v in w]
            return
        raise ValueError(f"class weights {w!r} must be 'sqrt', 'balanced' or one number >= 0 per class.")

    def _check_model_config(self) -> None:
        if self.model_config is None:
            self.model_config = {}
        if not isinstance(self.model_config, dict):
            raise ValueError(f"model config {self.model_config!r} must be a mapping of MAE settings such as dim: 256.")
        if not self.model_config:
            return
        fixed = sorted({"levels", "in_channels"} & set(self.model_config))
        if fixed:
            raise ValueError(f"model config key {fixed[0]!r} is set by the recipe's levels and the slide; remove it.")
        import inspect

        from napari_muvit.model.mae import MuViTMAE

        known = set(inspect.signature(MuViTMAE.__init__).parameters) - {"self", "levels", "in_channels"}
        unknown = sorted(set(self.model_config) - known)
        if unknown:
            raise ValueError(f"model config key {unknown[0]!r} is not an MAE setting; known: {', '.join(sorted(known))}.")
        self.model_config = {k: list(v) if isinstance(v, tuple) else v for k, v in self.model_config.items()}

    def _check_task_fields(self) -> None:
        defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
                    for f in dataclasses.fields(self)}
        wrong, kind = (FINETUNE_ONLY, "fine-tuning") if self.is_pretraining else (PRETRAIN_ONLY, "pre-training")
        for name in wrong:
            if getattr(self, name) != defaults[name]:
                raise ValueError(f"{name} {getattr(self, name)!r} applies to {kind} only, not to task "
                                 f"{self.task!r}; leave it out.")

    @property
    def is_pretraining(self) -> bool:
        return self.task == "mae"

    # ---- task defaults ----------------------------------------------------------------------
    @property
    def learning_rate(self) -> float:
        """``lr``, or the task's default (1e-3 fine-tuning, 1.5e-4 pre-training)."""
        if self.lr is not None:
            return self.lr
        return PRETRAIN_LR if self.is_pretraining else FINETUNE_LR

    @property
    def finetune_epochs(self) -> int:
        return int(self.epochs) if self.epochs is not None else FINETUNE_EPOCHS

    # ---- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (tuples become lists), without the other kind of run's fields (they
        are at their defaults, so :meth:`from_dict` gives back an equal recipe)."""
        d = dataclasses.asdict(self)
        for name in FINETUNE_ONLY if self.is_pretraining else PRETRAIN_ONLY:
            d.pop(name)
        if d["levels"] is not None:
            d["levels"] = list(d["levels"])
        return d

    @classmethod
    def from_json(cls, text: str) -> TrainRecipe:
        return cls.from_dict(_mapping(json.loads(text)))

    @classmethod
    def from_yaml(cls, text: str) -> TrainRecipe:
        return cls.from_dict(_mapping(yaml.safe_load(text)))

    @classmethod
    def load(cls, path: str | Path, task: str | None = None) -> TrainRecipe:
        """Read a ``.yaml``/``.yml`` or JSON file; ``task``: the task when the file names none."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training recipe file {str(path)!r} does not exist; give a .yaml or .json recipe.")
        text, is_yaml = path.read_text(), path.suffix in (".yaml", ".yml")
        try:
            d = _mapping(yaml.safe_load(text) if is_yaml else json.loads(text))
        except (yaml.YAMLError, json.JSONDecodeError) as exc:
            raise ValueError(f"training recipe file {str(path)!r} is not valid {'YAML' if is_yaml else 'JSON'}.") from exc
        if task is not None and "task" not in d:
            d = {"task": task, **d}
        return cls.from_dict(d)


def _mapping(d) -> dict:
    if not isinstance(d, dict):
        raise ValueError("a training recipe must hold a mapping of keys such as task, epochs, lr.")
    return d


def _words(name: str) -> str:
    return name.replace("_", " ")


def _number(v) -> bool:
    if isinstance(v, bool):
        return False
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _whole(value, what: str, minimum: int, example: str) -> int:
    if not _is_int(value) or int(float(value)) < minimum:
        raise ValueError(f"{what} {value!r} must be a whole number >= {minimum}, {example}.")
    return int(float(value))


def _flag(value, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} {value!r} must be true or false.")
    return value


def _names(value, what: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{what} {value!r} must be a list of names such as background, cell.")
    return list(value)
