"""Engine predictions with a model object already in memory (a fitted probe, an encoder), worker thread."""

from __future__ import annotations

from pathlib import Path


def predict_with_model(model, source, out, *, model_name: str, region=None, levels=None, progress=None,
                       cancel=None):
    """Run `engine.predict` with `model` over `region` (world px, None = whole slide) into the store `out`.

    `source` is a slide path or array data (`open_pyramid` input); returns the engine's result.
    """
    from napari_muvit.data import open_pyramid
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe

    recipe = Recipe(source=str(source) if isinstance(source, (str, Path)) else "", model=model_name,
                    levels=levels, region=region, out=str(out))
    return predict(recipe, progress, cancel, model=model, pyramid=open_pyramid(source))
