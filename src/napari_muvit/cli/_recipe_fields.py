"""The `Recipe` fields that `napari-muvit predict` takes from its flags (one slide and the batch form)."""

FIELDS = ("source", "model", "levels", "region", "tile", "overlap", "foreground", "mask", "device", "precision",
          "batch_size", "out", "prob_dtype", "output_level", "resume", "overwrite", "workers", "scheduler",
          "strict")
