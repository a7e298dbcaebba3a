"""The teach dock: scribble probe, fine-tuning and pre-training tabs."""
