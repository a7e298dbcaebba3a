"""Training: multi-resolution MAE pre-training, fine-tuning (segmentation / tile classification) and the
interactive probe. Plain torch loops; every entry point takes ``progress(done, total)`` and ``cancel()``;
`finetune` and `pretrain` take a `TrainRecipe` and ``on_record(record)`` (each history row as it is logged).
"""

from .finetune import evaluate, finetune
from .pretrain import TrainResult, pretrain
from .probe import ProbeResult, fit_probe
from .recipe import TrainRecipe

__all__ = ["ProbeResult", "TrainRecipe", "TrainResult", "evaluate", "finetune", "fit_probe", "pretrain"]
