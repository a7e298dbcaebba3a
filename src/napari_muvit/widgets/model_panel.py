"""Model choice (built-in demo or a folder), its short model card, and the run settings.

Only the small YAML files of a model folder are read here (no weights, no torch work on the GUI
thread); the engine loads the weights in its worker.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QSpinBox, QWidget

from napari_muvit.model.card import ModelCard  # pure Python, like config_io: no torch on the GUI thread
from napari_muvit.model.config_io import MAE_KEYS, read_yaml
from napari_muvit.widgets.form import PathEdit

DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class ModelInfo:
    """What the widget needs to know about a model before running it."""

    source: str  # "demo" or a folder path
    task: str
    levels: tuple[int, ...]
    crop_size: int
    in_channels: int
    ndim: int
    patch_size: int
    class_names: list
    class_colors: list
    pixel_size: object = None

    def summary(self) -> str:
        classes = ", ".join(self.class_names) if self.class_names else "none (features only)"
        ps = f" · trained at {self.pixel_size} per pixel" if self.pixel_size else ""
        return (f"{self.task} · classes: {classes}\nlevels {', '.join(f'x{f}' for f in self.levels)} · "
                f"crop {self.crop_size} px · patch {self.patch_size} · {self.in_channels} channel(s) · "
                f"{self.ndim}D{ps}")




def _model_folder(source: str) -> Path:
    if str(source) == "demo":
        spec = importlib.util.find_spec("napari_muvit.model")  # imports napari_muvit, not the model package
        folder = Path(list(spec.submodule_search_locations)[0]) / "demo"
        if not (folder / "model.pth").is_file():
            raise FileNotFoundError(f"The built-in demo model is not installed (expected it in {folder}).")
        return folder
    folder = Path(source)
    if not folder.exists():
        raise FileNotFoundError(f"The model folder {folder} does not exist.")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is a file, but a model is a folder with config.yaml and model.pth.")
    return folder


def read_model_info(source: str) -> ModelInfo:
    """Read ``muvit.yaml`` + ``config.yaml`` of ``"demo"`` or a model folder (FileNotFoundError/ValueError
    with one sentence when it is not a model). Weights are checked when the engine loads them."""
    folder = _model_folder(source)
    cfg_path, card_path = folder / "config.yaml", folder / "muvit.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder} is not a MuViT model folder: it has no config.yaml.")
    if not (folder / "model.pth").is_file():
        raise FileNotFoundError(f"The model folder {folder} has no model.pth.")
    config = read_yaml(cfg_path)
    card = read_yaml(card_path) if card_path.is_file() else {}
    if card:  # wrong field types or ranges: the loader's one sentence naming the field, not a TypeError
        ModelCard.from_dict(card, str(card_path))
    task = card.get("task") or ("mae" if any(k in config for k in MAE_KEYS) else "encoder")
    levels = card.get("levels") or config.get("levels") or (1, 4)
    patch = config.get("patch_size", 16)
    patch = int(patch[0] if isinstance(patch, (list, tuple)) else patch)
    return ModelInfo(
        source=str(source), task=str(task), levels=tuple(int(f) for f in levels),
        crop_size=int(card.get("crop_size") or 16 * patch),
        in_channels=int(card.get("in_channels") or config.get("in_channels", 1)),
        ndim=int(config.get("ndim", 2)), patch_size=patch, class_names=list(card.get("class_names") or []),
        class_colors=list(card.get("class_colors") or []), pixel_size=card.get("pixel_size"),
    )


class ModelPanel(QWidget):
    """Model source + card + device/precision/batch/tile/overlap. ``info`` is None until a model reads."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.source = QComboBox()
        self.source.addItems(["demo", "folder"])
        self.source.setToolTip("'demo': the small built-in model for the sample slide; 'folder': a model "
                               "folder (config.yaml + model.pth, e.g. one saved by the Teach dock).")
        # the folder field of every dock (`form.PathEdit`); a chosen folder also switches the source to it
        self.folder_row = PathEdit("folder", placeholder="model folder (config.yaml + model.pth)")
        self.folder, self.browse = self.folder_row.edit, self.folder_row.button
        self.folder.setToolTip("The model folder: it holds config.yaml, model.pth and the model card muvit.yaml.")
        self.browse.setToolTip("Choose the model folder.")
        self.folder_row.changed.connect(lambda *_: self.source.setCurrentText("folder"))
        self.card = QLabel("")
        self.card.setWordWrap(True)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setToolTip("Where the model runs: 'auto' picks the GPU (cuda, or mps on a Mac) when there "
                               "is one, else the CPU.")
        self.precision = QComboBox()
        self.precision.addItems(PRECISIONS)
        self.precision.setToolTip("Number format on the GPU: fp32 is exact; bf16/fp16 (16-bit numbers) run "
                                  "about twice as fast with nearly the same result. 'auto' picks for the device.")
        self.batch = QSpinBox()
        self.batch.setRange(0, 1024)
        self.batch.setSpecialValueText("auto")
        self.batch.setToolTip("Tiles computed together: larger is faster on a GPU but needs more memory. "
                              "'auto' fits it to the device.")
        self.tile = QSpinBox()
        self.tile.setRange(0, 8192)
        self.tile.setSingleStep(8)
        self.tile.setSpecialValueText("model's crop")
        self.tile.editingFinished.connect(self._snap)
        self.overlap = QSpinBox()
        self.overlap.setRange(-2, 4096)
        self.overlap.setSingleStep(2)
        self.overlap.setSpecialValueText("auto")  # -2 shows "auto"; 0 and up are (even) pixels
        self.overlap.editingFinished.connect(self._snap)
        self._patch, self._overlap_step = 8, 2
        self._tooltips()
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("model", self.source)
        form.addRow("", self.folder_row)
        form.addRow(self.card)
        form.addRow("device", self.device)
        form.addRow("precision", self.precision)
        form.addRow("batch size", self.batch)
        form.addRow("tile (px)", self.tile)
        form.addRow("overlap (px)", self.overlap)
        self.source.currentTextChanged.connect(lambda *_: self.folder.setEnabled(self.source.currentText() == "folder"))
        self.folder.setEnabled(False)
        self.info: ModelInfo | None = None

    def model_source(self) -> str:
        return "demo" if self.source.currentText() == "demo" else self.folder.text().strip()

    def refresh(self) -> ModelInfo:
        """Re-read the chosen model's card; raises the loader's sentence when it cannot be read."""
        self.info = None
        src = self.model_source()
        if not src:
            self.card.setText("Choose a model folder.")
            raise ValueError("no model folder was chosen; pick a folder with config.yaml and model.pth or use 'demo'.")
        try:
            self.info = read_model_info(src)
        except (ValueError, FileNotFoundError) as exc:
            self.card.setText(f"<i>{exc}</i>")
            raise
        self.card.setText(self.info.summary())
        return self.info

    def _tooltips(self) -> None:
        p, step = self._patch, self._overlap_step
        self.tile.setToolTip(f"Side of the square each model pass predicts, in full-resolution pixels; a multiple "
                             f"of the model's patch size ({p} px: the model cuts images into {p}x{p} px "
                             "patches). 'model's crop' uses the size it was trained with.")
        self.overlap.setToolTip(f"Pixels shared by neighbouring tiles, blended smoothly so no seams show; a "
                                f"multiple of {step}, at most half the tile. 'auto' = a quarter of the tile.")

    def constrain(self, info: ModelInfo) -> None:
        """Offer only values this model accepts: tile in steps of its patch size, overlap in its steps."""
        self._patch = int(info.patch_size)
        self._overlap_step = 2 * self._patch if info.task in ("encoder", "mae") else 2
        self.tile.setSingleStep(self._patch)
        self.tile.setMaximum(8192 // self._patch * self._patch)
        self.overlap.setSingleStep(self._overlap_step)
        self._tooltips()
        self._snap()

    def _snap(self) -> None:
        """A typed tile or overlap becomes the nearest value the model accepts (never a value that fails)."""
        p, step = self._patch, self._overlap_step
        tile = self.tile.value()
        if tile and tile % p:
            self.tile.setValue(max(p, int(round(tile / p)) * p))
        overlap = self.overlap.value()
        if overlap >= 0 and overlap % step:
            self.overlap.setValue(int(round(overlap / step)) * step)
        if overlap == -1:  # between "auto" (-2) and 0: no value
            self.overlap.setValue(-2)

    def check(self, info: ModelInfo) -> None:
        """The tile and overlap fit ``info``'s model; ValueError naming the value and what is accepted."""
        p = int(info.patch_size)
        step = 2 * p if info.task in ("encoder", "mae") else 2
        tile = self.tile.value() or info.crop_size
        if tile % p:
            raise ValueError(f"tile {tile} px is not a multiple of the model's patch size {p} px; use "
                             f"{max(p, tile // p * p)} or {(tile // p + 1) * p}.")
        overlap = self.overlap.value()
        if overlap >= 0 and overlap % step:
            raise ValueError(f"overlap {overlap} px must be a multiple of {step} px for this model; use "
                             f"{overlap // step * step}.")
        if overlap > tile // 2:
            raise ValueError(f"overlap {overlap} px is more than half the tile ({tile} px); use at most "
                             f"{tile // 2 // step * step} px.")

    def settings(self) -> dict:
        return {
            "model": self.source.currentText(), "model_folder": self.folder.text(),
            "device": self.device.currentText(), "precision": self.precision.currentText(),
            "batch_size": self.batch.value(), "tile": self.tile.value(), "overlap": self.overlap.value(),
        }

    def apply_settings(self, s: dict) -> None:
        self.folder.setText(str(s.get("model_folder", "")))
        self.source.setCurrentText(str(s.get("model", "demo")))
        self.device.setCurrentText(str(s.get("device", "auto")))
        self.precision.setCurrentText(str(s.get("precision", "auto")))
        self.batch.setValue(int(s.get("batch_size", 0)))
        self.tile.setValue(int(s.get("tile", 0)))
        self.overlap.setValue(int(s.get("overlap", -2)))
