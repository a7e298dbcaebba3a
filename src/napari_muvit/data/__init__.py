"""napari-muvit data package."""
