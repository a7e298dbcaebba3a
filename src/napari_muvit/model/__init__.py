"""napari-muvit model package: pure torch MuViT encoder, MAE, heads and checkpoint I/O."""

from .card import ModelCard
from .checkpoint import load_model, model_hash, save_model
from .encoder import MuViTEncoder
from .heads import MuViTClassifier, MuViTSegmenter, TokenProbe
from .mae import MuViTMAE

__all__ = [
    "ModelCard",
    "MuViTClassifier",
    "MuViTEncoder",
    "MuViTMAE",
    "MuViTSegmenter",
    "TokenProbe",
    "load_model",
    "model_hash",
    "save_model",
]
