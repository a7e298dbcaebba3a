"""The "Regions of interest" box of the predict widget: ranked list, score choice, camera jumps, export."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QFileDialog, QPushButton

from napari_muvit.widgets import layer_updates as U
from napari_muvit.widgets.form import Section, side_by_side
from napari_muvit.widgets.predict.run_inputs import notify_error
from napari_muvit.widgets.results import RoiTable, centre_camera
from napari_muvit.widgets.workers import EngineJob


class RoiPanel(Section):
    """Ranked ROIs of the last run. ``image()`` returns the run's `ImageInput` (for its pixel size and
    offset); ``report(text)`` shows a line in the host widget's status."""

    def __init__(self, viewer, image, report, parent=None):
        super().__init__("Regions of interest (click to go there)", parent)
        self.viewer, self._image, self._report = viewer, image, report
        self.store: Path | None = None
        self.ranked = None  # the RankedRois the list shows (export writes exactly these)
        self.table = RoiTable()
        self.score = QComboBox()
        self.score.setToolTip("What makes a region interesting; the list, the ROI layer and the exports "
                              "always follow this choice.")
        self.export_geojson = QPushButton("Export ROIs (GeoJSON)")
        self.export_geojson.setToolTip("Save the listed ROIs, in the listed order, as GeoJSON (QuPath: File > "
                                       "Import objects).")
        self.export_csv = QPushButton("Export ROIs (CSV)")
        self.export_csv.setToolTip("Save the listed ROIs, in the listed order, as a table (centre, box, score).")
        self.table.setToolTip("The best regions for the chosen score; click a row to go there.")
        self.row("rank by", self.score)
        self.add(self.table)
        self.add(side_by_side(self.export_geojson, self.export_csv))
        self.table.roi_clicked.connect(self._go_to)
        self.score.activated.connect(lambda *_: self.rerank())
        self.export_geojson.clicked.connect(lambda: self._export_clicked("geojson"))
        self.export_csv.clicked.connect(lambda: self._export_clicked("csv"))
        self._job = None

    def _frame(self):
        image = self._image()
        return (image.pixel_size, image.origin_offset) if image is not None else (None, (0.0, 0.0))

    def show(self, store, rois) -> list:
        """New run results: score choices from the store (its default first), then the ROI layer and rows,
        ranked by the store's default score. Returns new layers."""
        from napari_muvit.widgets.roi_view import score_choices, score_help

        self.store = Path(store)
        try:
            choices = score_choices(store)
        except (ValueError, OSError, KeyError):
            choices = []
        self.score.blockSignals(True)
        self.score.clear()
        for k, name in enumerate(choices):
            self.score.addItem(name)
            self.score.setItemData(k, score_help(name), Qt.ToolTipRole)
        self.score.blockSignals(False)
        return self._show(rois)

    def _show(self, rois) -> list:
        """Show ``(layer tuple, RankedRois)``: the box, the list and the layer all from that one ranking."""
        if rois is None:
            self.ranked = None
            self.table.set_rois([], [], [], [])
            return []
        tup, ranked = rois
        self.ranked = ranked
        self.score.blockSignals(True)
        self.score.setCurrentText(ranked.score)
        self.score.blockSignals(False)
        self.table.set_rois(*ranked.rows)
        return [U.add_or_update(self.viewer, tup)]

    def rerank(self):
        """Rank by the chosen score (in a worker thread: a whole-slide tile table is long)."""
        from napari_muvit.widgets.roi_view import roi_layer_and_table

        if self.store is None or not self.score.currentText():
            return None
        store, score = self.store, self.score.currentText()
        self.export_geojson.setEnabled(False)  # until the list shows the new ranking
        self.export_csv.setEnabled(False)
        pixel_size, offset = self._frame()
        job = EngineJob(lambda progress, cancel: roi_layer_and_table(store, pixel_size, offset, score=score),
                        description="MuViT ROIs")
        job.succeeded.connect(lambda res: self._show(None if res[0] is None else res))
        job.failed.connect(notify_error)
        job.ended.connect(self._reranked)
        self._job = job.start()
        return job

    def _reranked(self):
        self.export_geojson.setEnabled(True)
        self.export_csv.setEnabled(True)
        if self.ranked is not None and self.score.currentText() != self.ranked.score:  # ranking failed
            self.score.blockSignals(True)
            self.score.setCurrentText(self.ranked.score)
            self.score.blockSignals(False)

    def _go_to(self, y, x, size):
        # list rows are already in napari's world px frame (offset included)
        centre_camera(self.viewer, y, x, size, self._frame()[0])

    def _export_clicked(self, fmt: str):
        if self.ranked is None:
            notify_error("there are no ROIs yet; run a prediction first.")
            return
        default = str(self._default_path(fmt))
        path, _ = QFileDialog.getSaveFileName(self, "Export ROIs", default, f"{fmt.upper()} (*.{fmt})")
        if path:
            out = self.export_rois(fmt, path)
            if out is not None:
                self._report(f"ROIs written to {out}")

    def _default_path(self, fmt: str) -> Path:
        return self.store.parent / f"{self.store.stem}-rois-{self.ranked.score.replace(':', '-')}.{fmt}"

    def export_rois(self, fmt: str, path=None):
        """Write the listed ROIs, in the list's order (GeoJSON for QuPath, or CSV) to ``path`` (default:
        beside the store); errors become notifications."""
        from napari_muvit.widgets.roi_view import export_rois

        if self.ranked is None:
            notify_error("there are no ROIs yet; run a prediction first.")
            return None
        path = Path(path) if path else self._default_path(fmt)
        if path.suffix.lower() not in ({".geojson", ".json"} if fmt == "geojson" else {".csv"}):
            path = path.with_name(path.name + f".{fmt}")
        try:
            return export_rois(self.ranked, fmt, path, store=self.store)
        except (ValueError, FileNotFoundError, FileExistsError) as exc:
            notify_error(str(exc))
            return None
