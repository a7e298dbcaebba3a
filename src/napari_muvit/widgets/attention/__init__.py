"""The attention dock: cross-scale attention of one query token, and the feature view."""
