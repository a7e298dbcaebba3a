"""napari-muvit engine package."""
