"""napari-muvit engine: recipes, tiled prediction into OME-Zarr stores, ROIs, attention probe, training.

Napari-free and callback driven (``progress(done, total)``, ``cancel() -> bool``), so the widgets run it in
worker threads and the CLI and dask workers run it headless. Names are imported lazily (torch and zarr load
on first use).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Recipe": "recipe",
    "predict": "predict",
    "PredictionResult": "predict",
    "attention_probe": "attention",
    "open_session": "attention",
    "AttentionSession": "attention",
    "AttentionResult": "attention",
    "rank_rois": "rois",
    "Roi": "rois",
    "export_geojson": "export",
    "export_csv": "export",
    "export_rois": "export",
    "TileGrid": "grid",
    "OutputStore": "store",
    "configure_threads": "device",
    "resolve_device": "device",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
