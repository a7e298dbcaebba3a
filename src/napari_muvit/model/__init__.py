"""napari-muvit model package."""
