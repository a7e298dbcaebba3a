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

from magicgui.widgets import CheckBox, Container, FileEdit, Label, PushButton
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QFileDialog

from napari_muvit.engine.slide_list import default_out_dir, describe_slide, list_slides

from .batch_runner import SlideBatch, ThumbnailLoader
from .table import SlideTable

NEXT_KEY, PREVIOUS_KEY = "PageDown", "PageUp"


class SlideListWidget(Container):
    """Dock widget: pick a folder (or a ``.txt`` list) of slides; open each slide and its outputs in one click."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer  # napari passes the viewer by this parameter name
        self.slides: list = []
        self.current: int | None = None
        self._added: list = []  # layers this dock added for the open slide
        self.source = FileEdit(mode="d", label="slides", tooltip="a folder of slides, or type a .txt list of paths")
        self.list_file = PushButton(text="Use a .txt list…")
        self.outputs = FileEdit(mode="d", label="outputs",
                                tooltip="folder of prediction stores <slide>.zarr (default: the slides' folder)")
        self.refresh = PushButton(text="List slides")
        self.previous = PushButton(text=f"◀ previous ({PREVIOUS_KEY})")
        self.open_button = PushButton(text="open")
        self.next = PushButton(text=f"next ({NEXT_KEY}) ▶")
        self.status = Label(value="pick a folder of slides or a .txt list, then List slides")
        nav = Container(widgets=[self.previous, self.open_button, self.next], layout="horizontal", labels=False)
        # batch: a model folder (or a saved recipe) run on the selected slides, resumable
        self.model = FileEdit(mode="d", label="model", tooltip="a napari-muvit model folder (empty: the demo model)")
        self.recipe_file = FileEdit(mode="r", label="recipe", filter="*.yaml *.yml *.json",
                                    tooltip="optional saved recipe (levels, tile, normalisation, ...)")
        self.foreground = CheckBox(value=True, text="skip background tiles")
        self.run_button = PushButton(text="Run on selected slides")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.run_status = Label(value="")
        runs = Container(widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False)
        self.extend([self.source, self.list_file, self.outputs, self.refresh, nav, self.status, self.model,
                     self.recipe_file, self.foreground, runs, self.run_status])
        self.batch: SlideBatch | None = None
        self._batch_rows: list[int] = []
        self.thumbnails: ThumbnailLoader | None = None
        self.table = SlideTable()
        self.native.layout().addWidget(self.table)
        self.refresh.changed.connect(self.list_slides)
        self.list_file.changed.connect(self._pick_list_file)
        self.previous.changed.connect(self.previous_slide)
        self.next.changed.connect(self.next_slide)
        self.open_button.changed.connect(self._open_selected)
        self.table.slide_clicked.connect(self.open_slide)
        self.run_button.changed.connect(self.run_selected)
        self.cancel_button.changed.connect(self.cancel_run)
        self.viewer.bind_key(NEXT_KEY, lambda _v: self.next_slide(), overwrite=True)
        self.viewer.bind_key(PREVIOUS_KEY, lambda _v: self.previous_slide(), overwrite=True)

    # ---- listing ------------------------------------------------------------------------------
    def _out_dir(self, source: Path) -> Path:
        text = str(self.outputs.value or "").strip()
        return Path(text) if text not in ("", ".") else default_out_dir(source)

    def _pick_list_file(self, *_):
        path, _filter = QFileDialog.getOpenFileName(self.native, "Slide list", "", "Slide lists (*.txt)")
        if path:
            self.source.value = path
            self.list_slides()

    def list_slides(self, *_) -> None:
        """Fill the table from the chosen folder or list (errors shown as one notification sentence)."""
        text = str(self.source.value or "").strip()
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
        self.thumbnails = ThumbnailLoader([p for _, p in readable], parent=self.native)
        self.thumbnails.thumbnail.connect(
            lambda i, rgb, rows=rows, listed=self.slides: self.table.set_thumbnail(rows[i], rgb)
            if listed is self.slides else None)
        self.thumbnails.start()
        done = sum(s.state == "complete" for s in self.slides)
        self.status.value = f"{len(self.slides)} slides, {done} with complete outputs"

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
        self.status.value = f"{row + 1} / {len(self.slides)}: {info.name} ({info.state} outputs)"

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

        recipe_text = str(self.recipe_file.value or "").strip()
        recipe = Recipe.load(recipe_text) if recipe_text not in ("", ".") else Recipe()
        model_text = str(self.model.value or "").strip()
        if model_text not in ("", "."):
            recipe = recipe.replace(model=model_text)
        return recipe.replace(foreground=bool(self.foreground.value))

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
        batch = self.batch = SlideBatch([self.slides[r].path for r in rows], recipe, out_dir, parent=self.native)
        batch.slide_started.connect(self._slide_started)
        batch.tiles.connect(self._slide_tiles)
        batch.slide_finished.connect(self._slide_finished)
        batch.job.failed.connect(show_error)
        batch.job.ended.connect(self._batch_ended)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.run_status.value = f"0 / {len(rows)} slides"
        batch.start()

    def cancel_run(self, *_) -> None:
        if self.batch is not None and self.batch.running:
            self.batch.cancel()
            self.run_status.value = "cancelling after the current batch of tiles…"

    def _slide_started(self, index: int) -> None:
        self.table.item(self._batch_rows[index], 4).setText("running")

    def _slide_tiles(self, index: int, done: int, total: int) -> None:
        name = self.slides[self._batch_rows[index]].name
        self.run_status.value = f"slide {index + 1} / {len(self._batch_rows)} ({name}): {done} / {total} tiles"

    def _slide_finished(self, index: int, status: str, error: str) -> None:
        row = self._batch_rows[index]
        self.refresh_state(row)
        if status == "failed":
            self.table.item(row, 4).setText("failed")
            self.table.item(row, 4).setToolTip(error)
        self.run_status.value = f"{index + 1} / {len(self._batch_rows)} slides ({self.slides[row].name}: {status})"

    def _batch_ended(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False
        batch = self.batch
        result = batch.job.result if batch is not None else None
        if batch is not None and batch.job.cancel_requested:
            self.run_status.value = "cancelled; Run continues where it stopped and skips finished slides"
        elif result is not None:
            ok = sum(r.status in ("done", "skipped") for r in result.rows)
            self.run_status.value = f"{ok} / {len(self._batch_rows)} slides with complete outputs; table: {result.summary}"
