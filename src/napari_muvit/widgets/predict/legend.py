"""A small class legend for a dock: one coloured swatch and name per class, as the output layers draw them."""

from __future__ import annotations

from html import escape

from qtpy.QtWidgets import QLabel

from napari_muvit.widgets.layers import class_color


def legend_entries(class_names, class_colors=None) -> list[tuple[str, str | None]]:
    """``(name, '#rrggbb')`` per class, in the colours of the labels and probability layers; ``None`` for
    a background class (see-through in the labels layer)."""
    from napari_muvit.engine.rois import is_background

    return [(str(name), None if is_background(name) else class_color(class_colors, k))
            for k, name in enumerate(class_names or [])]


class ClassLegend(QLabel):
    """Rich-text legend: a coloured square and the class name per class (background marked see-through)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWordWrap(True)
        self.setToolTip("Colours of the model's classes in the 'labels' and 'p(...)' layers. Background is "
                        "left see-through so the tissue under it stays visible.")
        self.entries: list[tuple[str, str | None]] = []

    def set_classes(self, class_names, class_colors=None) -> None:
        self.entries = legend_entries(class_names, class_colors)
        if not self.entries:
            self.setText("")
            self.setVisible(False)
            return
        parts = []
        for name, color in self.entries:
            if color is None:
                parts.append(f"&#9633;&nbsp;{escape(name)} (see-through)")
            else:
                parts.append(f"<span style='color:{color}'>&#9632;</span>&nbsp;{escape(name)}")
        self.setText("classes: " + " &nbsp; ".join(parts))
        self.setVisible(True)
