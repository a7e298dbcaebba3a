"""Training: multi-resolution MAE pre-training, fine-tuning (segmentation / tile classification) and the
interactive probe. Plain torch loops; every entry point takes ``progress(done, total)`` and ``cancel()``.
"""

from .finetune import evaluate, finetune
from .pretrain import TrainResult, pretrain
from .probe import ProbeResult, fit_probe

__all__ = ["ProbeResult", "TrainResult", "evaluate", "finetune", "fit_probe", "pretrain"]
