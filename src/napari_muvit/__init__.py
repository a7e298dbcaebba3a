"""MuViT multi-resolution vision transformers for gigapixel microscopy slides in napari."""

__version__ = "0.1.0"
