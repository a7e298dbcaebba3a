"""The "Measurements" box of the predict widget: class areas, % of tissue and object counts of the last
run, for the whole prediction and for each shape of a Shapes layer; a sortable table, a bar chart and CSV.

The numbers come from `napari_muvit.engine.measure.measure_store` (the same as `napari-muvit measure`),
computed in a worker thread block by block from the stored labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
)

from napari_muvit.widgets.form import Section, side_by_side
from napari_muvit.widgets.plots import BarPlot
from napari_muvit.widgets.predict.run_inputs import notify_error
from napari_muvit.widgets.workers import EngineJob

WHOLE = "whole prediction only"
COLUMNS = ("region", "class", "area", "% of tissue", "objects")


class _NumberItem(QTableWidgetItem):
    """A cell that sorts by its number, not its text."""

    def __init__(self, value):
        super().__init__("" if value is None else (f"{value:,.4g}" if isinstance(value, float) else f"{value:,}"))
        self.value = -np.inf if value is None else float(value)
        self.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))

    def __lt__(self, other):
        return self.value < getattr(other, "value", -np.inf)


class MeasurePanel(Section):
    """Measurements of the last run's store. ``report(text)`` shows a line in the host widget's status."""

    def __init__(self, viewer, report, parent=None):
        super().__init__("Measurements", parent)
        self.viewer, self._report = viewer, report
        self.store: Path | None = None
        self.result = None  # the MeasureTable shown (export writes exactly it)
        self.job: EngineJob | None = None
        self.regions = QComboBox()
        self.regions.setToolTip("Measure the whole prediction, and also every shape of this Shapes layer "
                                "(drawn, or QuPath annotations opened from GeoJSON).")
        self.min_size = QDoubleSpinBox()
        self.min_size.setRange(0, 1e12)
        self.min_size.setDecimals(0)
        self.min_size.setSuffix(" px²")
        self.min_size.setToolTip("Objects (connected pixels of one class) smaller than this many slide pixels "
                                 "are not counted; their area still is.")
        self.measure_button = QPushButton("Measure")
        self.measure_button.setToolTip("Compute class areas, % of tissue and object counts of the last run "
                                       "(in the background).")
        self.export_button = QPushButton("Export measurements (CSV)")
        self.export_button.setToolTip("Save every row of the table, with areas in px² and, when the slide has "
                                      "a pixel size, in µm² and mm².")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSortingEnabled(True)
        self.table.setToolTip("Click a column header to sort. '% of tissue' is the share of predicted pixels "
                              "not of a background class.")
        self.table.setMinimumHeight(140)
        self.chart = BarPlot(height_px=150, empty="press Measure")
        self.chart.setToolTip("Area of every tissue class (not background) in the whole prediction.")

        self.row("regions", self.regions)
        self.row("smallest object", self.min_size)
        self.add(side_by_side(self.measure_button, self.export_button))
        self.add(self.table)
        self.add(self.chart)
        self.measure_button.clicked.connect(self.measure)
        self.export_button.clicked.connect(lambda: self.export())
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.refresh_regions)
        self.refresh_regions()
        self.set_store(None)

    # ------------------------------------------------------------------ inputs
    def refresh_regions(self, *_) -> None:
        current = self.regions.currentText()
        self.regions.blockSignals(True)
        self.regions.clear()
        self.regions.addItem(WHOLE)
        from napari.layers import Shapes

        self.regions.addItems([layer.name for layer in self.viewer.layers if isinstance(layer, Shapes)
                               and not layer.name.startswith("MuViT")])
        self.regions.setCurrentText(current if self.regions.findText(current) >= 0 else WHOLE)
        self.regions.blockSignals(False)

    def set_store(self, store) -> None:
        """The store the next Measure reads (``None``: nothing to measure yet)."""
        self.store = None if store is None else Path(store)
        self.measure_button.setEnabled(self.store is not None)
        self.export_button.setEnabled(self.result is not None)

    def _regions(self) -> list | None:
        name = self.regions.currentText()
        if name in ("", WHOLE) or name not in self.viewer.layers:
            return None
        from napari_muvit.widgets.annotation_layers import regions_from_shapes

        regions = regions_from_shapes(self.viewer.layers[name])
        if not regions:
            raise ValueError(f"the Shapes layer {name!r} has no polygon, rectangle or ellipse to measure.")
        return regions

    # ------------------------------------------------------------------ running
    def measure(self) -> EngineJob | None:
        if self.store is None:
            notify_error("there is no prediction to measure yet; run the model first.")
            return None
        if self.job is not None and self.job.running:
            return self.job
        try:
            regions = self._regions()
        except ValueError as exc:
            notify_error(str(exc))
            return None
        from napari_muvit.engine.measure import measure_store

        store, min_size = self.store, float(self.min_size.value())
        job = EngineJob(lambda progress, cancel: measure_store(store, regions, min_size=min_size, progress=progress),
                        description="measuring", unit="blocks")
        job.succeeded.connect(self.show)
        job.failed.connect(notify_error)
        job.ended.connect(lambda: self.measure_button.setEnabled(self.store is not None))
        self.measure_button.setEnabled(False)
        self._report("measuring the last run…")
        self.job = job.start()
        return job

    # ------------------------------------------------------------------ showing
    def show(self, table) -> None:
        """Fill the table and the chart from a `MeasureTable`."""
        from napari_muvit.engine.measure import NOT_PREDICTED, TISSUE

        self.result = table
        area_key, unit = ("area_um2", "µm²") if table.physical else ("area_px2", "px²")
        self.table.setHorizontalHeaderItem(2, QTableWidgetItem(f"area ({unit})"))
        self.table.setSortingEnabled(False)  # rows are filled in order, then sorting applies again
        rows = [r for r in table.rows if r["class"] != NOT_PREDICTED]
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            self.table.setItem(i, 0, QTableWidgetItem(str(r["region"])))
            self.table.setItem(i, 1, QTableWidgetItem(str(r["class"])))
            self.table.setItem(i, 2, _NumberItem(r[area_key]))
            self.table.setItem(i, 3, _NumberItem(r["percent_of_tissue"]))
            self.table.setItem(i, 4, _NumberItem(r["objects"]))
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()
        # the chart: tissue classes of the whole prediction (background would dwarf them)
        whole = [r for r in rows if r["region"] == rows[0]["region"] and r["class"] != TISSUE] if rows else []
        tissue = [r for r in whole if r["percent_of_tissue"] is not None] or whole
        self.draw_chart([r["class"] for r in tissue], [r[area_key] for r in tissue], unit)
        self.export_button.setEnabled(True)
        self._report(f"measured {len({r['region'] for r in rows})} region(s)")

    def draw_chart(self, names, areas, unit) -> None:
        self.chart.set_bars(names, areas, f"area ({unit})")
        self.bars = list(zip(names, areas))

    def export(self, path: str | None = None) -> Path | None:
        if self.result is None:
            notify_error("there are no measurements to export yet; press Measure first.")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export measurements", "measurements.csv", "CSV (*.csv)")
            if not path:
                return None
        out = self.result.to_csv(path)
        self._report(f"measurements saved to {out}")
        return out
