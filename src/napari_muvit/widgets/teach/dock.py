"""The teaching dock widget: scribble probe, fine-tuning and MR-MAE pre-training from inside napari.

Three tabs, each built from `widgets/form.py` like every dock, in its own module (`probe`, `finetune`,
`pretrain`, sharing `training_tab.TrainingTab`). The training itself is
`napari_muvit.engine.training` (`fit_probe`, `finetune`, `pretrain`), run by `engine.teach_jobs` in the
engine worker process (`ProcessJob`, like predictions): the GUI process never imports torch for them.
"""

from __future__ import annotations

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QTabWidget, QVBoxLayout, QWidget

from napari_muvit.widgets.engine_process import warm_when_shown
from napari_muvit.widgets.teach.finetune import FinetuneTab
from napari_muvit.widgets.teach.pretrain import PretrainTab
from napari_muvit.widgets.teach.probe import ScribbleProbeTab


class TeachWidget(QWidget):
    """Dock widget with the three ways of teaching the model, one tab each.

    The scribble tab is built with the dock; Fine-tune and Pre-train are built one per event-loop turn after
    napari has shown it (or at once, the first time either is asked for or its tab is chosen): building all
    three inside napari's ``add_dock_widget`` held the viewer about 0.1 s longer.
    """

    _LATER = (("finetune", FinetuneTab, "Fine-tune"), ("pretrain", PretrainTab, "Pre-train"))

    def __init__(self, napari_viewer):
        super().__init__()
        viewer = self.viewer = napari_viewer  # napari passes the viewer by this parameter name
        self.scribble = ScribbleProbeTab(viewer)
        self.tabs = QTabWidget(self)
        self.tabs.addTab(self.scribble, "Scribble probe")
        self._built: dict[str, QWidget] = {}
        for _, _, title in self._LATER:
            self.tabs.addTab(QWidget(), title)  # a placeholder until the tab is built
        self.tabs.currentChanged.connect(lambda k: self._build(k - 1) if k >= 1 else None)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        self.setMaximumWidth(520)  # a dock beside the canvas, not half the window
        warm_when_shown(self)  # torch loads in the worker process while the user sets up (as the predict dock)
        self._later = QTimer(self)  # owned: a closed dock builds nothing more
        self._later.setInterval(0)
        self._later.timeout.connect(self._build_next)
        self._later.start()

    @property
    def finetune(self) -> FinetuneTab:
        return self._build(0)

    @property
    def pretrain(self) -> PretrainTab:
        return self._build(1)

    def _build_next(self) -> None:
        todo = [k for k, (name, _, _) in enumerate(self._LATER) if name not in self._built]
        if todo:
            self._build(todo[0])
        if len(todo) <= 1:
            self._later.stop()

    def _build(self, k: int):
        name, cls, title = self._LATER[k]
        if name not in self._built:
            tab = self._built[name] = cls(self.viewer)
            current = self.tabs.currentIndex()
            placeholder = self.tabs.widget(k + 1)
            self.tabs.blockSignals(True)  # swapping the page is not the user choosing a tab
            self.tabs.removeTab(k + 1)
            self.tabs.insertTab(k + 1, tab, title)
            self.tabs.setCurrentIndex(current)
            self.tabs.blockSignals(False)
            placeholder.deleteLater()
        return self._built[name]
