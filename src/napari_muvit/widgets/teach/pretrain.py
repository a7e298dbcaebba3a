"""Pre-train tab: MR-MAE pre-training on the current slide, with reconstruction previews as layers.

The training is `engine.training.pretrain`; after it (done or cancelled) the saved MAE reconstructs the
nested crops around the view's centre and each level's reconstruction is shown on its world position.
"""

from __future__ import annotations

import numpy as np
from napari.utils.notifications import show_error

from napari_muvit.data.geometry import pixel_corner
from napari_muvit.data.run_region import region_center
from napari_muvit.widgets.form import PathEdit, Section, spin_box
from napari_muvit.widgets.image_layers import image_pixel_size, image_source, view_region_of
from napari_muvit.widgets.layers import META_KEY, add_or_update, level_transform
from napari_muvit.widgets.levels import LevelTicks
from napari_muvit.widgets.teach.training_tab import TrainingTab, chosen_folder

NEW_MODEL_LEVELS = (1, 2, 4, 8, 16, 32, 64)  # offered for a new model: each divides the next


class PretrainTab(TrainingTab):
    """MR-MAE pre-training on the current slide, with reconstruction previews as layers."""

    description = "pre-train"
    tooltips = {
        "levels": "The resolutions the new model looks at together: x1 is full resolution, x4 is 4 times "
                  "coarser and shows 16 times more tissue around each crop.",
        "size": "Side of each crop in pixels, a multiple of 16: the model cuts a crop into 16 x 16-pixel squares "
                "(patches), one token each.",
        "steps": "Training steps. The model learns by filling in hidden patches (a masked autoencoder, MAE); "
                 "the plot shows its reconstruction loss (lower is better).",
        "batch": "Crops per step: larger is smoother but needs more memory.",
        "out": "Folder the pre-trained encoder is saved to (a base model for fine-tuning).",
    }

    def __init__(self, viewer):
        super().__init__(viewer, xlabel="step")
        self.levels = LevelTicks(NEW_MODEL_LEVELS, chosen=(1, 4, 16))
        self.size = spin_box(128, 16, 1024, step=16)
        self.steps = spin_box(200, 1, 1_000_000)
        self.batch = spin_box(8, 1, 512)
        self.out = PathEdit("save")
        model = Section("New model")
        model.row("levels", self.levels)
        model.row("crop size", self.size)
        training = Section("Training")
        training.row("steps", self.steps)
        training.row("batch size", self.batch)
        training.row("save to", self.out)
        self._finish_layout([self.data, model, training])
        self.previews: list = []

    def _prepare(self) -> dict:
        image = self.image.value
        if image is None:
            raise ValueError("Choose the image layer to pre-train on.")
        if not self.levels.chosen():
            raise ValueError("Tick at least one level for the new model (x1 is full resolution).")
        out = chosen_folder(self.out, "the pre-trained model")
        return {"source": image_source(image), "levels": self.levels.value, "size": self.size.value(),
                "steps": self.steps.value(), "batch_size": self.batch.value(), "out": out,
                "center_yx": region_center(view_region_of(self.viewer, image))}

    def _run(self, kw: dict, progress, cancel):
        return run_pretrain(kw, progress, cancel, self._report)

    def _on_done(self, result) -> None:
        super()._on_done(result)
        self._show(result)

    def _on_cancelled(self, result) -> None:
        super()._on_cancelled(result)
        self._show(result)

    def _show(self, result) -> None:
        if result.preview is None:
            show_error(f"No reconstruction preview: {result.preview_error}")
        else:
            self.previews = show_reconstruction(self.viewer, result.preview, self.image.value)
        state = "cancelled" if result.cancelled else "done"
        self.status.setText(f"{state} after {result.steps_done} steps; model saved to {result.model_dir}; "
                             "reconstructions shown as layers")


def run_pretrain(kw: dict, progress, cancel, report):
    from napari_muvit.engine.training import TrainRecipe, pretrain

    recipe = TrainRecipe(task="mae", levels=kw["levels"], size=kw["size"], steps=kw["steps"],
                         batch_size=kw["batch_size"], preview_every=0)
    result = pretrain([kw["source"]], kw["out"], recipe, progress=progress, cancel=cancel, on_record=report)
    try:
        result.preview = reconstruction_preview(result.model_dir, kw["source"], kw["center_yx"])
    except (ValueError, FileNotFoundError) as exc:  # the model is saved either way; previews are extra
        result.preview, result.preview_error = None, str(exc)
    return result


def reconstruction_preview(model_dir, source, center_yx) -> dict:
    """The MAE's reconstruction of the nested crops around `center_yx` (world px).

    Returns `levels`, `bboxes (L, 2, 2)` world px, `reconstruction (L, C, S, S)` (masked patches
    predicted, visible ones kept) and `masked (L, C, S, S)` (NaN where masked), normalised intensities.
    """
    import torch

    from napari_muvit.data import Normalizer, open_pyramid
    from napari_muvit.engine.training.previews import mask_to_pixels
    from napari_muvit.model import load_model

    mae = load_model(model_dir)
    card, enc = mae.card, mae.encoder
    pyramid = open_pyramid(source)
    policy = (card.normalization or {}).get("policy")
    normalizer = Normalizer.from_dict(card.normalization) if policy else Normalizer.from_pyramid(pyramid)
    levels = tuple(int(v) for v in enc.levels)
    img, bbox = pyramid.crops(tuple(center_yx), levels, int(card.crop_size), normalizer=normalizer)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        out = mae(torch.from_numpy(img[None]), torch.from_numpy(np.asarray(bbox, np.float32)[None]))
    size = img.shape[-2:]
    grid = tuple(s // p for s, p in zip(size, enc.patch_size))
    masked = mask_to_pixels(out["mask"][0].numpy(), len(levels), grid, tuple(enc.patch_size))[:, None]
    pred = out["pred"][0].float().numpy()
    return {"levels": levels, "bboxes": np.asarray(bbox), "reconstruction": np.where(masked, pred, img),
            "masked": np.where(masked, np.nan, img)}


def show_reconstruction(viewer, preview: dict, image_layer) -> list:
    """One Image layer per level with the MAE reconstruction, on the crop's world position."""
    pixel_size = image_pixel_size(image_layer) if image_layer is not None else None
    out = []
    for level, bbox, recon in zip(preview["levels"], preview["bboxes"], preview["reconstruction"]):
        data = np.moveaxis(recon, 0, -1) if recon.shape[0] == 3 else recon[0]
        origin = pixel_corner(np.asarray(bbox[0], dtype=float), level)  # first pixel's outer edge
        scale, translate = level_transform(level, pixel_size, 2, origin=origin)
        finite = data[np.isfinite(data)]
        limits = (float(np.percentile(finite, 1)), float(np.percentile(finite, 99) + 1e-6))
        kwargs = {"name": f"MAE reconstruction x{level}", "scale": scale, "translate": translate,
                  "rgb": recon.shape[0] == 3, "contrast_limits": limits, "colormap": "gray",
                  "metadata": {META_KEY: {"kind": "reconstruction", "level": int(level)}}}
        if kwargs["rgb"]:
            kwargs.pop("colormap")
        out.append(add_or_update(viewer, (data.astype(np.float32), kwargs, "image")))
    return out
