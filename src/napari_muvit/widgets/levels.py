"""Levels panel: the slide's pyramid levels next to the levels the model can look at.

The user ticks the set of model levels to use (only levels the model was built for can be ticked);
every ticked level gets one plain sentence saying where its pixels come from: read as stored, or
averaged from a finer stored level (resampled), or impossible with this slide.
"""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)


def _fmt_size(f: float, pixel_size, unit) -> str:
    """Size of one pixel of level ``f``: physical when the slide says so, else in slide (level-1) px."""
    if pixel_size is None or not unit:
        return f"{f:g} slide px"
    return f"{f * float(pixel_size[-1]):.3g} {unit}"


def level_source(level: int, stored: Sequence[float]) -> tuple[str, float | None]:
    """Where a model level's pixels come from: ``("stored", f)``, ``("averaged", f_source)`` or
    ``("missing", None)``. Averaging uses the coarsest stored level that divides ``level``."""
    stored = [float(f) for f in stored]
    if any(abs(f - level) < 1e-6 for f in stored):
        return "stored", float(level)
    dividers = [f for f in stored if f <= level and abs(level / f - round(level / f)) < 1e-6]
    if dividers:
        return "averaged", max(dividers)
    return "missing", None


def explain_level(level: int, stored: Sequence[float], pixel_size=None, unit=None) -> str:
    """One sentence for the user about model level ``level`` on this slide."""
    kind, src = level_source(level, stored)
    size = _fmt_size(level, pixel_size, unit)
    if kind == "stored":
        return f"x{level}: read directly from the slide's level x{level:g} ({size} per pixel)."
    if kind == "averaged":
        r = int(round(level / src))
        return (f"x{level}: not stored in the slide; computed on the fly by averaging {r}x{r} pixel blocks "
                f"of level x{src:g} ({size} per pixel). Same result, a little slower.")
    return (f"x{level}: cannot be made from this slide (its levels are "
            f"{', '.join(f'x{f:g}' for f in stored)}); untick it.")


class LevelTicks(QWidget):
    """Model-level tick boxes, the same in every dock: one ``x<f>`` box per offered level, in one row.

    ``set_levels(levels, chosen=None, fixed=False)`` offers a set of levels (e.g. a newly chosen model's;
    ``chosen=None`` keeps the user's ticks when the same levels are offered again, else ticks all);
    ``fixed``: all ticked and locked, as for a model whose head needs every level it was trained with.
    ``chosen()`` the ticked levels; ``value`` the same as text (``"1,4,16"``, what the engine's
    ``parse_levels`` reads; ``""`` when none), and assigning text or a sequence ticks exactly those levels.
    ``changed`` fires when a tick changes.
    """

    changed = Signal()

    def __init__(self, levels: Sequence[int] = (1, 4, 16), chosen=None, parent=None,
                 box_tip: str = "Let the model see the slide {f} times coarser than full resolution (x1).",
                 fixed_tip: str = "This model was trained on levels {levels} together and needs all of them."):
        super().__init__(parent)
        self.row = QHBoxLayout(self)
        self.row.setContentsMargins(0, 0, 0, 0)
        self.row.addStretch(1)
        self._box_tip, self._fixed_tip = box_tip, fixed_tip
        self.boxes: dict[int, QCheckBox] = {}
        self.fixed = False
        self.set_levels(levels, chosen)

    def set_levels(self, levels: Sequence[int], chosen: Sequence[int] | None = None, fixed: bool = False) -> None:
        levels = [int(f) for f in levels]
        keep = set(self.chosen()) & set(levels) if chosen is None and self.boxes and not fixed else None
        for box in self.boxes.values():
            self.row.removeWidget(box)
            box.setParent(None)  # gone from findChildren now, not at the next event-loop turn
            box.deleteLater()
        self.boxes = {}
        self.fixed = bool(fixed)
        wanted = set(levels) if fixed or chosen is None else {int(f) for f in chosen}
        if keep:
            wanted = keep  # same model offered again: the user's ticks stay
        names = ", ".join(f"x{f}" for f in levels)
        for f in levels:
            box = QCheckBox(f"x{f}")
            box.setChecked(f in wanted)
            box.setEnabled(not fixed)
            box.setToolTip(self._fixed_tip.format(levels=names, f=f) if fixed else self._box_tip.format(f=f))
            box.toggled.connect(lambda *_: self.changed.emit())
            self.row.insertWidget(self.row.count() - 1, box)
            self.boxes[f] = box

    def chosen(self) -> tuple[int, ...]:
        return tuple(f for f, box in sorted(self.boxes.items()) if box.isChecked())

    @property
    def offered(self) -> tuple[int, ...]:
        return tuple(sorted(self.boxes))

    @property
    def value(self) -> str:
        return ",".join(str(f) for f in self.chosen())

    @value.setter
    def value(self, levels) -> None:
        if isinstance(levels, str):
            levels = [v for v in levels.replace(" ", "").split(",") if v]
        wanted = {int(float(v)) for v in levels or ()}
        missing = sorted(wanted - set(self.boxes))
        if missing:
            raise ValueError(f"level(s) {', '.join(f'x{f}' for f in missing)} are not offered here; "
                             f"choose from {', '.join(f'x{f}' for f in self.offered)}.")
        if not self.fixed:
            for f, box in self.boxes.items():
                box.setChecked(f in wanted)


class LevelsPanel(QWidget):
    """Table of pyramid levels + the model's `LevelTicks` + one explanation per ticked level.

    ``set_pyramid(factors, shapes, pixel_size, unit)``, ``set_model_levels(levels, chosen)``,
    ``chosen() -> tuple[int, ...]``, ``set_chosen(levels)``; ``changed`` fires when the ticks change.
    """

    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["level", "pixel size", "size (px)"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setMaximumHeight(120)
        self.table.setToolTip("The resolutions stored in the slide file: x1 is full resolution, x4 is 4 times "
                              "coarser (each pixel covers 4x4 full-resolution pixels).")
        self.ticks = LevelTicks((), box_tip="Let the model see the slide {f} times coarser (x1 = full resolution); "
                                            "an encoder can use any subset of its levels.")
        self.ticks.changed.connect(self._explain)
        self.ticks.changed.connect(self.changed.emit)
        self.explanation = QLabel("")
        self.explanation.setWordWrap(True)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow(QLabel("Slide pyramid:"))
        form.addRow(self.table)
        form.addRow("Model levels:", self.ticks)
        form.addRow(self.explanation)
        self._stored: list[float] = []
        self._pixel_size = None
        self._unit = None

    @property
    def boxes(self) -> dict[int, QCheckBox]:
        return self.ticks.boxes

    @property
    def fixed(self) -> bool:
        return self.ticks.fixed

    def set_pyramid(self, factors: Sequence[float], shapes: Sequence[Sequence[int]], pixel_size=None, unit=None):
        self._stored = [float(f) for f in factors]
        self._pixel_size, self._unit = pixel_size, unit
        self.table.setRowCount(len(factors))
        for i, (f, shape) in enumerate(zip(factors, shapes)):
            cells = [f"x{float(f):g}", _fmt_size(float(f), pixel_size, unit), " x ".join(str(int(n)) for n in shape)]
            for j, text in enumerate(cells):
                self.table.setItem(i, j, QTableWidgetItem(text))
        self._explain()

    def set_model_levels(self, levels: Sequence[int], chosen: Sequence[int] | None = None, fixed: bool = False):
        """One box per model level, ticked: ``chosen`` (all when None). ``fixed``: the model only runs on exactly
        these levels (a trained head needs every level it was trained with), so every box is ticked and locked."""
        self.ticks.set_levels(levels, list(levels) if chosen is None else chosen, fixed=fixed)
        self._explain()

    def chosen(self) -> tuple[int, ...]:
        return self.ticks.chosen()

    def set_chosen(self, levels: Sequence[int]):
        """Tick exactly ``levels`` (of the model's); a model with fixed levels keeps all of them."""
        if not self.fixed:
            self.ticks.value = [f for f in levels if int(f) in self.boxes]

    def explanations(self) -> list[str]:
        return [explain_level(f, self._stored, self._pixel_size, self._unit) for f in self.chosen()]

    def _explain(self, *_):
        if not self.boxes:
            self.explanation.setText("Choose a model to see the levels it can use.")
        elif not self.chosen():
            self.explanation.setText("Tick at least one model level.")
        elif not self._stored:
            self.explanation.setText("Choose an image layer to see how its levels match the model's.")
        else:
            self.explanation.setText("\n".join(self.explanations()))
