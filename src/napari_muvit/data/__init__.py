"""napari-muvit data package: lazy pyramids in world coordinates, nested crops, normalisation."""

from .foreground import foreground_mask
from .geometry import (
    crop_bbox,
    crop_start_index,
    index_to_world,
    validate_crop_size,
    validate_levels,
    world_to_index,
)
from .normalize import Normalizer
from .pyramid import Pyramid
from .readers import open_pyramid
from .synthetic import synthetic_slide, write_synthetic_slide

__all__ = [
    "Normalizer",
    "foreground_mask",
    "synthetic_slide",
    "write_synthetic_slide",
    "Pyramid",
    "crop_bbox",
    "crop_start_index",
    "index_to_world",
    "open_pyramid",
    "validate_crop_size",
    "validate_levels",
    "world_to_index",
]
