"""napari-muvit data package: lazy pyramids in world coordinates, nested crops, normalisation.

The names below are imported on first use (PEP 562): importing a small module of this package (e.g.
``napari_muvit.data.run_region`` or ``.geometry``, as a dock does when it opens) does not import the readers,
zarr and the synthetic generator with it.
"""

from napari_muvit._lazy import lazy_attributes

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


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
