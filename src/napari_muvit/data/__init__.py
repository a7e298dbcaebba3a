"""napari-muvit data package: lazy pyramids in world coordinates, nested crops, normalisation.

The names below are imported on first use (PEP 562): importing a small module of this package (e.g.
``napari_muvit.data.run_region`` or ``.geometry``, as a dock does when it opens) does not import the readers,
zarr and the synthetic generator with it.
"""

from importlib import import_module

_LAZY = {
    "foreground_mask": ".foreground",
    "crop_bbox": ".geometry",
    "crop_start_index": ".geometry",
    "index_to_world": ".geometry",
    "validate_crop_size": ".geometry",
    "validate_levels": ".geometry",
    "world_to_index": ".geometry",
    "Normalizer": ".normalize",
    "Pyramid": ".pyramid",
    "open_pyramid": ".readers",
    "synthetic_slide": ".synthetic",
    "write_synthetic_slide": ".synthetic",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
