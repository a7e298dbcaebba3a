"""The teaching dock widget: scribble probe, fine-tuning and MR-MAE pre-training from inside napari.

Three tabs, each a magicgui `Container` in its own module (`probe`, `finetune`, `pretrain`, sharing
`training_tab.TrainingTab`). The training itself is
`napari_muvit.engine.training` (`fit_probe`, `finetune`, `pretrain`), run in `EngineJob` threads; torch is
imported by the first job's thread (`training_tab.warm_up`), never while the dock opens.
"""

from __future__ import annotations

from qtpy.QtWidgets import QTabWidget, QVBoxLayout, QWidget

from napari_muvit.widgets.teach.finetune import FinetuneTab
from napari_muvit.widgets.teach.pretrain import PretrainTab
from napari_muvit.widgets.teach.probe import ScribbleProbeTab


class TeachWidget(QWidget):
    """Dock widget with the three ways of teaching the model, one tab each."""

    def __init__(self, napari_viewer):
        super().__init__()
        viewer = self.viewer = napari_viewer  # napari passes the viewer by this parameter name
        self.scribble = ScribbleProbeTab(viewer)
        self.finetune = FinetuneTab(viewer)
        self.pretrain = PretrainTab(viewer)
        self.tabs = QTabWidget(self)
        self.tabs.addTab(self.scribble.native, "Scribble probe")
        self.tabs.addTab(self.finetune.native, "Fine-tune")
        self.tabs.addTab(self.pretrain.native, "Pre-train")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        self.setMaximumWidth(520)  # a dock beside the canvas, not half the window
        for tab in (self.scribble, self.finetune, self.pretrain):
            viewer.layers.events.inserted.connect(tab.refresh)
            viewer.layers.events.removed.connect(tab.refresh)
