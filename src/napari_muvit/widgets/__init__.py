"""napari-muvit widgets package."""
