"""The teaching dock widget: scribble probe, fine-tuning and MR-MAE pre-training from inside napari.

Three tabs, each built from `widgets/form.py` like every dock, in its own module (`probe`, `finetune`,
`pretrain`, sharing `training_tab.TrainingTab`). The training itself is
`napari_muvit.engine.training` (`fit_probe`, `finetune`, `pretrain`), run by `engine.teach_jobs` in the
engine worker process (`ProcessJob`, like predictions): the GUI process never imports torch for them.
"""

from __future__ import annotations

from qtpy.QtWidgets import QTabWidget, QVBoxLayout, QWidget

from napari_muvit.widgets.engine_process import warm_when_shown
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
        self.tabs.addTab(self.scribble, "Scribble probe")
        self.tabs.addTab(self.finetune, "Fine-tune")
        self.tabs.addTab(self.pretrain, "Pre-train")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        self.setMaximumWidth(520)  # a dock beside the canvas, not half the window
        warm_when_shown(self)  # torch loads in the worker process while the user sets up (as the predict dock)
