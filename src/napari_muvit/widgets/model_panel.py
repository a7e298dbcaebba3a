"""Model choice (built-in demo or a folder), its short model card, and the run settings.

Only the small YAML files of a model folder are read here (no weights, no torch work on the GUI
thread); the engine loads the weights in its worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

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


def read_model_info(source: str) -> ModelInfo:
    """Read ``muvit.yaml`` + ``config.yaml`` of ``"demo"`` or a model folder (FileNotFoundError/ValueError
    with one sentence when it is not a model)."""
    from napari_muvit.model.card import ModelCard
    from napari_muvit.model.checkpoint import encoder_kwargs, read_yaml, resolve_folder

    folder = resolve_folder(source)
    cfg_path, card_path = folder / "config.yaml", folder / "muvit.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder} is not a MuViT model folder: it has no config.yaml.")
    enc_kw, mae_kw = encoder_kwargs(read_yaml(cfg_path), cfg_path)
    if card_path.is_file():
        card = ModelCard.from_dict(read_yaml(card_path), str(card_path))
    else:
        card = ModelCard(task="mae" if mae_kw else "encoder", levels=tuple(enc_kw.get("levels", (1, 4))),
                         in_channels=enc_kw.get("in_channels", 1))
    patch = int(enc_kw.get("patch_size", 16))
    return ModelInfo(
        source=str(source), task=card.task, levels=tuple(int(f) for f in card.levels),
        crop_size=int(card.crop_size or 16 * patch), in_channels=int(card.in_channels),
        ndim=int(enc_kw.get("ndim", 2)), patch_size=patch, class_names=list(card.class_names or []),
        class_colors=list(card.class_colors or []), pixel_size=card.pixel_size,
    )


class ModelPanel(QWidget):
    """Model source + card + device/precision/batch/tile/overlap. ``info`` is None until a model reads."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.source = QComboBox()
        self.source.addItems(["demo", "folder"])
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("model folder (config.yaml + model.pth)")
        self.browse = QPushButton("…")
        self.browse.setMaximumWidth(30)
        self.browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.folder)
        row.addWidget(self.browse)
        folder_row = QWidget()
        folder_row.setLayout(row)
        self.card = QLabel("")
        self.card.setWordWrap(True)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.precision = QComboBox()
        self.precision.addItems(PRECISIONS)
        self.batch = QSpinBox()
        self.batch.setRange(0, 1024)
        self.batch.setSpecialValueText("auto")
        self.tile = QSpinBox()
        self.tile.setRange(0, 8192)
        self.tile.setSingleStep(8)
        self.tile.setSpecialValueText("model's crop")
        self.overlap = QSpinBox()
        self.overlap.setRange(-2, 4096)
        self.overlap.setSingleStep(2)
        self.overlap.setSpecialValueText("auto")
        self.overlap.setMinimum(-2)  # -2 shows "auto"; 0 and up are pixels
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("model", self.source)
        form.addRow("", folder_row)
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

    def _browse(self):
        path = QFileDialog.getExistingDirectory(self, "MuViT model folder")
        if path:
            self.folder.setText(path)
            self.source.setCurrentText("folder")
