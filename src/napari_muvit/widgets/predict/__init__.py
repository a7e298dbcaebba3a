"""The predict dock: run MuViT on a slide, live previews, ROIs and measurements."""
