"""The slide-list dock: a cohort's slides in a table, one click to open a slide with its outputs.

The list comes from `engine.slide_list` (a folder of slides or a ``.txt`` list; stores
``outputs/<stem>.zarr``); a click on a row, the open button, or Page Down / Page Up in the viewer (next /
previous slide) replaces the layers this dock added for the previous slide with the new slide's image
layers (`_reader.read_slide`) and, when its store exists, the prediction layers (`results.store_layers`).
Layers the user added are never touched. Thumbnails are read off the GUI thread after listing
(`batch_runner.ThumbnailLoader`). *Run on selected slides* predicts the selected rows (all rows
when none is selected) in the background with a model folder or a saved recipe (`batch_runner`).
"""

from __future__ import annotations

from pathlib import Path

from napari.utils.notifications import show_error
from qtpy.QtWidgets import QCheckBox, QFileDialog, QPushButton, QWidget

from napari_muvit.engine.slide_list import default_out_dir, describe_slide, list_slides
from napari_muvit.widgets.form import (
    PathEdit,
    RunButtons,
    Section,
    StatusLine,
    dock_layout,
    set_tips,
    side_by_side,
)

from .batch_runner import SlideBatch, ThumbnailLoader
from .table import SlideTable

NEXT_KEY, PREVIOUS_KEY = "PageDown", "PageUp"


TIPS = {  # control attribute -> plain-words help
    "source": "A folder of slides, or a .txt list of slide paths (one a line, relative to the list).",
    "list_file": "Choose a .txt list of slide paths instead of a folder.",
    "outputs": "Folder of prediction stores <slide>.zarr (empty: the slides' folder).",
    "refresh": "List the slides with their size, pixel size, format and output state.",
    "previous": "Open the previous slide of the list (Page Up in the viewer).",
    "open_button": "Open the selected slide and its outputs.",
    "next": "Open the next slide of the list (Page Down in the viewer).",
    "status": "How many slides are listed, and which one is open.",
    "model": "A napari-muvit model folder (empty: the demo model).",
    "recipe_file": "Optional saved recipe (levels, tile, normalisation, ...); the model above replaces its model.",
    "foreground": "Skip tiles with no tissue (bright or empty background).",
    "run_button": "Predict the selected slides (all when none is selected) in the background; finished slides "
                  "are skipped.",
    "cancel_button": "Stop after the current batch of tiles; Run continues where it stopped.",
    "run_status": "Slides done / to do, and the current slide's tiles.",
}


class SlideListWidget(QWidget):
    """Dock widget: pick a folder (or a ``.txt`` list) of slides; open each slide and its outputs in one click."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer  # napari passes the viewer by this parameter name
        self.slides: list = []
        self.current: int | None = None
        self._added: list = []  # layers this dock added for the open slide
        self.source = PathEdit("folder", placeholder="a folder of slides or a .txt list")
        self.list_file = QPushButton("Use a .txt list…")
        self.outputs = PathEdit("folder", placeholder="default: the slides' folder")
        self.refresh = QPushButton("List slides")
        self.previous = QPushButton(f"◀ previous ({PREVIOUS_KEY})")
        self.open_button = QPushButton("open")
        self.next = QPushButton(f"next ({NEXT_KEY}) ▶")
        self.status = StatusLine("pick a folder of slides or a .txt list, then List slides")
        self.table = SlideTable()
        # batch: a model folder (or a saved recipe) run on the selected slides, resumable
        self.model = PathEdit("folder", placeholder="demo model")
        self.recipe_file = PathEdit("file", filter="Recipes (*.yaml *.yml *.json)", placeholder="optional")
        self.foreground = QCheckBox("skip background tiles")
        self.foreground.setChecked(True)
        buttons = RunButtons("Run on selected slides")
        self.run_button, self.cancel_button = buttons.run, buttons.cancel
        self.run_status = StatusLine()
        set_tips(self, TIPS)
        slides = Section("Slides")
        slides.row("slides", self.source)
        slides.row("outputs", self.outputs)
        slides.add(side_by_side(self.refresh, self.list_file))
        run_box = Section("Run")
        run_box.row("model", self.model)
        run_box.row("recipe", self.recipe_file)
        for w in (self.foreground, buttons, self.run_status):
            run_box.add(w)
        # the table takes the spare height; no scroll area around it (it scrolls itself)
        dock_layout(self, [slides, self.table, side_by_side(self.previous, self.open_button, self.next),
                           self.status, run_box], scroll=False)
        self.batch: SlideBatch | None = None
        self._batch_rows: list[int] = []
        self.thumbnails: ThumbnailLoader | None = None
        self.refresh.clicked.connect(self.list_slides)
        self.list_file.clicked.connect(self._pick_list_file)
        self.previous.clicked.connect(self.previous_slide)
        self.next.clicked.connect(self.next_slide)
        self.open_button.clicked.connect(self._open_selected)
        self.table.slide_clicked.connect(self.open_slide)
        self.run_button.clicked.connect(self.run_selected)
        self.cancel_button.clicked.connect(self.cancel_run)
        self.viewer.bind_key(NEXT_KEY, lambda _v: self.next_slide(), overwrite=True)
        self.viewer.bind_key(PREVIOUS_KEY, lambda _v: self.previous_slide(), overwrite=True)

    # ---- listing ------------------------------------------------------------------------------
    def _out_dir(self, source: Path) -> Path:
        text = self.outputs.value
        return Path(text) if text not in ("", ".") else default_out_dir(source)

    def _pick_list_file(self, *_):
        path, _filter = QFileDialog.getOpenFileName(self, "Slide list", "", "Slide lists (*.txt)")
        if path:
            self.source.value = path
            self.list_slides()

    def list_slides(self, *_) -> None:
        """Fill the table from the chosen folder or list (errors shown as one notification sentence)."""
        text = self.source.value
        if text in ("", "."):
            show_error("pick a folder of slides or a .txt list of slide paths first.")
            return
        source = Path(text)
        try:
            self.slides = list_slides(source, self._out_dir(source))
        except (ValueError, FileNotFoundError) as exc:
            show_error(str(exc))
            return
        self.current = None
        self.table.set_slides(self.slides)
        if self.thumbnails is not None:
            self.thumbnails.job.cancel()
        readable = [(r, s.path) for r, s in enumerate(self.slides) if not s.error]
        rows = [r for r, _ in readable]
        self.thumbnails = ThumbnailLoader([p for _, p in readable], parent=self)
        self.thumbnails.thumbnail.connect(
            lambda i, rgb, rows=rows, listed=self.slides: self.table.set_thumbnail(rows[i], rgb)
            if listed is self.slides else None)
        self.thumbnails.start()
        done = sum(s.state == "complete" for s in self.slides)
        self.status.setText(f"{len(self.slides)} slides, {done} with complete outputs")

    def refresh_state(self, row: int) -> None:
        """Read one slide's header and output state again (e.g. after a run wrote its store)."""
        info = self.slides[row]
        self.slides[row] = describe_slide(info.path, info.store.parent)
        self.table.set_row(row, self.slides[row])

    # ---- opening ------------------------------------------------------------------------------
    def _open_selected(self, *_) -> None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        self.open_slide(rows[0].row() if rows else (self.current or 0))

    def next_slide(self) -> None:
        if self.slides:
            self.open_slide(0 if self.current is None else min(self.current + 1, len(self.slides) - 1))

    def previous_slide(self) -> None:
        if self.slides:
            self.open_slide(0 if self.current is None else max(self.current - 1, 0))

    def open_slide(self, row: int) -> None:
        """Show slide ``row`` and its outputs in place of the previous slide's layers."""
        if not 0 <= row < len(self.slides):
            return
        from napari_muvit.widgets._reader import read_slide
        from napari_muvit.widgets.results import store_layers

        info = self.slides[row]
        try:
            tuples = read_slide(str(info.path))
        except (ValueError, FileNotFoundError, OSError) as exc:
            show_error(str(exc))
            return
        outputs = []
        if info.store.exists():
            try:
                outputs = store_layers(info.store)
            except (ValueError, FileNotFoundError, KeyError) as exc:
                show_error(f"the outputs {str(info.store)!r} of {info.name!r} could not be shown: {exc}")
        self._remove_added()
        for data, kwargs, kind in tuples + outputs:
            added = getattr(self.viewer, f"add_{kind}")(data, **kwargs)
            self._added += added if isinstance(added, list) else [added]
        self.current = row
        self.table.selectRow(row)
        self.viewer.reset_view()
        self.status.setText(f"{row + 1} / {len(self.slides)}: {info.name} ({info.state} outputs)")

    def _remove_added(self) -> None:
        for layer in self._added:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._added = []

    # ---- running ------------------------------------------------------------------------------
    def selected_rows(self) -> list[int]:
        model = self.table.selectionModel()
        rows = sorted({i.row() for i in model.selectedRows()}) if model is not None else []
        return rows or list(range(len(self.slides)))

    def _recipe(self):
        from napari_muvit.engine.recipe import Recipe

        recipe_text = self.recipe_file.value
        recipe = Recipe.load(recipe_text) if recipe_text not in ("", ".") else Recipe()
        model_text = self.model.value
        if model_text not in ("", "."):
            recipe = recipe.replace(model=model_text)
        return recipe.replace(foreground=self.foreground.isChecked())

    def run_selected(self, *_) -> None:
        """Predict the selected slides (all when none is selected) into the outputs folder, in the background."""
        if self.batch is not None and self.batch.running:
            show_error("a batch is already running; cancel it or wait for it to end.")
            return
        rows = [r for r in self.selected_rows() if not self.slides[r].error]
        if not rows:
            show_error("no readable slide to run; list a folder of slides first.")
            return
        try:
            recipe = self._recipe()
        except (ValueError, FileNotFoundError) as exc:
            show_error(str(exc))
            return
        out_dir = self.slides[rows[0]].store.parent
        self._batch_rows = rows
        batch = self.batch = SlideBatch([self.slides[r].path for r in rows], recipe, out_dir, parent=self)
        batch.slide_started.connect(self._slide_started)
        batch.tiles.connect(self._slide_tiles)
        batch.slide_finished.connect(self._slide_finished)
        batch.job.failed.connect(show_error)
        batch.job.ended.connect(self._batch_ended)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.run_status.progress(0, len(rows), f"0 / {len(rows)} slides")
        batch.start()

    def cancel_run(self, *_) -> None:
        if self.batch is not None and self.batch.running:
            self.batch.cancel()
            self.run_status.setText("cancelling after the current batch of tiles…")

    def _slide_started(self, index: int) -> None:
        self.table.item(self._batch_rows[index], 4).setText("running")

    def _slide_tiles(self, index: int, done: int, total: int) -> None:
        name = self.slides[self._batch_rows[index]].name
        self.run_status.setText(f"slide {index + 1} / {len(self._batch_rows)} ({name}): {done} / {total} tiles")

    def _slide_finished(self, index: int, status: str, error: str) -> None:
        row = self._batch_rows[index]
        self.refresh_state(row)
        if status == "failed":
            self.table.item(row, 4).setText("failed")
            self.table.item(row, 4).setToolTip(error)
        self.run_status.progress(index + 1, len(self._batch_rows),
                                 f"{index + 1} / {len(self._batch_rows)} slides ({self.slides[row].name}: {status})")

    def _batch_ended(self) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.run_status.idle()
        batch = self.batch
        result = batch.job.result if batch is not None else None
        if batch is not None and batch.job.cancel_requested:
            self.run_status.setText("cancelled; Run continues where it stopped and skips finished slides")
        elif result is not None:
            ok = sum(r.status in ("done", "skipped") for r in result.rows)
            self.run_status.setText(f"{ok} / {len(self._batch_rows)} slides with complete outputs; table: "
                                    f"{result.summary}")
