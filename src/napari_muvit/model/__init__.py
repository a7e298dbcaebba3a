"""napari-muvit model package: pure torch MuViT encoder, MAE, heads and checkpoint I/O.

The torch-backed names are imported on first use (PEP 562), so that ``napari_muvit.model.card`` (pure
Python) can be read without importing torch: a GUI checks model cards on its own thread.
"""

from napari_muvit._lazy import lazy_attributes

from .card import ModelCard

_LAZY = {
    "load_model": ".checkpoint",
    "model_hash": ".checkpoint",
    "save_model": ".checkpoint",
    "MuViTEncoder": ".encoder",
    "MuViTClassifier": ".heads",
    "MuViTSegmenter": ".heads",
    "TokenProbe": ".heads",
    "MuViTMAE": ".mae",
}

__all__ = ["ModelCard", *sorted(_LAZY)]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
