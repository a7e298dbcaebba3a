"""napari-muvit model package: pure torch MuViT encoder, MAE, heads and checkpoint I/O.

The torch-backed names are imported on first use (PEP 562), so that ``napari_muvit.model.card`` (pure
Python) can be read without importing torch: a GUI checks model cards on its own thread.
"""

from importlib import import_module

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


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
