"""Feature view: PCA-RGB of the encoder's finest-level features over the current view, as one RGB layer."""

from __future__ import annotations

import dataclasses

from napari_muvit.engine.model_runs import predict_with_model
from napari_muvit.engine.scratch_folder import ScratchFolder
from napari_muvit.widgets.image_layers import image_pixel_size, image_source, view_region_of
from napari_muvit.widgets.layer_updates import add_or_update
from napari_muvit.widgets.layers import rgb_overview_layer
from napari_muvit.widgets.workers import EngineJob

FEATURES_LAYER = "MuViT features (PCA RGB)"


def start_feature_view(viewer, layer, model: str, levels: str | None, scratch: ScratchFolder) -> EngineJob:
    """Start the feature view of `layer`'s visible region in a worker; the result is added as a layer.

    Raises ValueError when the view does not overlap the image.
    """
    from napari.utils.notifications import show_error

    kw = {"source": image_source(layer), "model": model, "levels": levels,
          "region": view_region_of(viewer, layer)}
    kw["out"] = str(scratch.fresh("features"))  # after the region check: a view off the image makes nothing
    job = EngineJob(lambda progress, cancel: run_feature_view(kw, progress, cancel), description="feature view")
    job.succeeded.connect(lambda path: show_features(viewer, path, image_pixel_size(layer)))
    job.failed.connect(show_error)
    return job.start()


def run_feature_view(kw: dict, progress, cancel):
    """Worker thread: the model's encoder over the region -> PCA-RGB store (`engine.predict`)."""
    from napari_muvit.model import load_model

    model = load_model(kw["model"])
    encoder = model.encoder
    if model is not encoder:  # a segmenter or classifier: show what its encoder sees
        encoder.card = dataclasses.replace(model.card, task="encoder")
    result = predict_with_model(encoder, kw["source"], kw["out"], model_name=kw["model"], region=kw["region"],
                                levels=kw["levels"], progress=progress, cancel=cancel)
    return result.path


def show_features(viewer, path, pixel_size=None):
    """The PCA-RGB store as one RGB Image layer on the region it covers (GUI thread)."""
    import dask.array as da

    from napari_muvit.engine.store import OutputStore

    store = OutputStore.open(path)
    root, factor = store.root, store.factor
    y0, x0 = store.origin_yx
    layer = rgb_overview_layer(da.from_zarr(root["0"]), level=factor, pixel_size=pixel_size, name=FEATURES_LAYER,
                               origin=(y0, x0), extra_meta={"store": str(path)})
    return add_or_update(viewer, layer)
