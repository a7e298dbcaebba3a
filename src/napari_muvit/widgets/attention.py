"""The attention probe dock widget: click the slide, see where that token looks at every level.

The engine computes (`napari_muvit.engine.attention_probe` on a per-tile cache session); this module only
turns its `AttentionResult` into world-aligned layers and a level-share plot, and runs the engine off the
GUI thread. A click that arrives while a probe runs replaces the pending one, so hovering never queues up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, PushButton
from napari.utils.notifications import show_error

from napari_muvit.widgets.layers import (
    META_KEY,
    add_or_update,
    crop_outlines_layer,
    layer_pixel_size,
    level_transform,
    world_to_napari,
)
from napari_muvit.widgets.plots import LevelSharePlot
from napari_muvit.widgets.region import clip_region, view_region
from napari_muvit.widgets.workers import EngineJob

MAP_PREFIX = "attention level "
QUERY_LAYER = "attention query"
CROPS_LAYER = "attention crops"


def token_grid_placement(bbox, level: float, shape) -> tuple[np.ndarray, np.ndarray]:
    """World placement of a per-token map: `(scale, translate)` in world px (multiply by pixel size).

    `bbox` (2, 2) world px: centres of the first and last pixel of the level's crop (the model's bbox);
    `level` the crop's downsample factor; `shape` (h, w) token grid. Each cell covers `level * patch`
    world px, i.e. `(bbox extent + level) / n` per axis, and its centre sits at the centre of the pixels it
    was computed from, so the map lies exactly on the crop's pixels.
    """
    bbox = np.asarray(bbox, dtype=float)
    shape = np.asarray(shape[-2:], dtype=float)
    edge = bbox[0] - (level - 1) / 2  # world coordinate of the crop's first pixel edge (pixel k: [k f, (k+1) f))
    cell = (bbox[1] - bbox[0] + level) / shape
    return cell, edge + (cell - 1) / 2


@dataclass
class ProbeView:
    """What the overlay draws: one map per level, plus where the query token is.

    `maps[i]` (h_i, w_i) float attention of the query to level `levels[i]`'s tokens, `bboxes[i]` (2, 2)
    world px of that level's crop, `query_world_yx` (2,) world px, `query_level` the query token's level,
    `patch_size` in pixels of each level.
    """

    levels: tuple[int, ...]
    maps: list
    bboxes: list
    query_world_yx: np.ndarray
    query_level: int
    patch_size: int


def _update_in_place(viewer, layer_tuple: tuple, count: int | None = None):
    """Update an existing same-named layer's data and transform without removing it (a removal costs a
    full garbage collection, ~0.2 s), else add it through the layer builder's `add_or_update`."""
    data, kwargs, layer_type = layer_tuple
    name = kwargs["name"]
    layer = viewer.layers[name] if name in viewer.layers else None
    same = layer is not None and layer._type_string == layer_type
    if same and layer_type == "shapes":
        same = len(layer.data) == count
    if not same:
        return add_or_update(viewer, layer_tuple)
    # each transform assignment re-validates the viewer's dims: skip the unchanged ones
    for key in ("scale", "translate"):
        if key in kwargs and not np.allclose(getattr(layer, key), kwargs[key]):
            setattr(layer, key, kwargs[key])
    if layer_type == "shapes" and all(np.array_equal(a, b) for a, b in zip(layer.data, data)):
        return layer
    layer.data = data
    return layer


class AttentionOverlay:
    """One Image layer per level, the query marker and the crop outlines; replaced, never piled up."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.levels: tuple[int, ...] = ()

    def show(self, view: ProbeView, pixel_size=None, unit=None) -> None:
        for level in self.levels:
            name = f"{MAP_PREFIX}{level}"
            if level not in view.levels and name in self.viewer.layers:
                self.viewer.layers.remove(name)
        # coarse maps first so finer ones sit on top of them
        order = sorted(range(len(view.levels)), key=lambda i: -view.levels[i])
        for i in order:
            level = int(view.levels[i])
            data = np.asarray(view.maps[i], dtype=np.float32)
            cell, origin = token_grid_placement(view.bboxes[i], level, data.shape)
            top = float(data.max()) if data.size and data.max() > 0 else 1.0
            kwargs = {
                "name": f"{MAP_PREFIX}{level}", "scale": tuple(world_to_napari(cell, pixel_size)),
                "translate": tuple(world_to_napari(origin, pixel_size)), "colormap": "inferno",
                "opacity": 0.6, "blending": "translucent", "contrast_limits": (0.0, top),
                "metadata": {META_KEY: {"kind": "attention", "level": level, "cell": cell.tolist()}},
            }
            layer = _update_in_place(self.viewer, (data, kwargs, "image"))
            layer.contrast_limits = (0.0, top)
        self.levels = tuple(int(v) for v in view.levels)
        crops = crop_outlines_layer(view.bboxes, view.levels, pixel_size, unit, name=CROPS_LAYER)
        _update_in_place(self.viewer, crops, count=len(view.levels))
        scale, _ = level_transform(1, pixel_size, 2)
        point = np.asarray(view.query_world_yx, dtype=float).reshape(1, 2)
        size = view.query_level * view.patch_size
        query = {
            "name": QUERY_LAYER, "scale": scale, "symbol": "square", "size": size,
            "face_color": "transparent", "border_color": "cyan", "border_width": 0.15,
        }
        marker = _update_in_place(self.viewer, (point, query, "points"))
        if not np.allclose(marker.size, size):
            marker.size = size

    def clear(self) -> None:
        names = [f"{MAP_PREFIX}{lv}" for lv in self.levels] + [QUERY_LAYER, CROPS_LAYER]
        for name in names:
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self.levels = ()


# ------------------------------------------------------------------------------------------ widget
def image_layers_of(viewer) -> list:
    from napari.layers import Image

    return [layer for layer in viewer.layers if isinstance(layer, Image)
            and (layer.metadata.get(META_KEY) or {}).get("kind") != "attention"]


def image_pixel_size(layer) -> tuple[float, float]:
    """Physical size of a level-1 pixel of an image layer: from our layer builder, else its napari scale."""
    return layer_pixel_size(layer) or tuple(float(s) for s in layer.scale[-2:])


@dataclass
class ProbeRequest:
    """One click, read on the GUI thread: everything the worker needs, no Qt object."""

    key: tuple
    source: object
    point_yx: tuple[float, float]
    layer: str | int
    head: str | int
    query_level: int


class AttentionProbeWidget(Container):
    """Dock widget: click (or Shift-hover) on an image to probe the model's cross-scale attention."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        viewer = self.viewer = napari_viewer  # napari passes the viewer by this parameter name
        self.overlay = AttentionOverlay(viewer)
        self._image = ComboBox(label="image", choices=lambda _w: image_layers_of(viewer), nullable=True)
        self._model = FileEdit(label="model", mode="d", value="demo",
                               tooltip="'demo' (built in) or a model folder")
        self._levels = LineEdit(label="levels", value="",
                                tooltip="downsample factors the model sees, e.g. 1,4,16 (empty: the model's)")
        self._layer = ComboBox(label="layer", choices=["last", "rollout"], value="last",
                               tooltip="one transformer layer, the last, or attention rollout over all layers")
        self._head = ComboBox(label="head", choices=["mean"], value="mean")
        self._query_level = ComboBox(label="query level", choices=[1], value=1,
                                     tooltip="the level whose token at the click is the query")
        self._on_click = CheckBox(text="probe on click", value=True)
        self._hover = CheckBox(text="follow the cursor while Shift is held", value=False)
        self._feature_btn = PushButton(text="Feature view (PCA-RGB)")
        self._clear_btn = PushButton(text="Clear attention layers")
        self._status = Label(value="Click the image to probe.")
        self.extend([self._image, self._model, self._levels, self._layer, self._head, self._query_level,
                     self._on_click, self._hover, self._feature_btn, self._clear_btn, self._status])
        self.plot = LevelSharePlot()
        self.native.layout().addWidget(self.plot)
        self.native.layout().addStretch(1)
        self._clear_btn.changed.connect(self.clear)
        self._feature_btn.changed.connect(self.feature_view)
        for w in (self._layer, self._head, self._query_level):
            w.changed.connect(self._reprobe)
        viewer.layers.events.inserted.connect(self._refresh_images)
        viewer.layers.events.removed.connect(self._refresh_images)
        self._refresh_images()
        viewer.mouse_drag_callbacks.append(self._on_mouse_drag)
        viewer.mouse_move_callbacks.append(self._on_mouse_move)
        self.session = None
        self._session_key: tuple | None = None
        self._job = None
        self._pending: ProbeRequest | None = None
        self._last_point: tuple[float, float] | None = None
        self.last_view: ProbeView | None = None
        self.last_result = None
        self.last_latency_s: float | None = None
        self._feature_job = None

    def _refresh_images(self, *_):
        self._image.reset_choices()  # only the layer picker: the other choices come from the model
        pick_first(self._image)

    # ---------------------------------------------------------------- mouse
    def _on_mouse_drag(self, viewer, event):
        """A click without a drag probes; a drag stays napari's pan."""
        if not self._on_click.value or event.button not in (None, 1):
            return
        active = viewer.layers.selection.active
        if getattr(active, "mode", "pan_zoom") != "pan_zoom":  # painting, drawing, selecting: not a probe
            return
        start = np.asarray(event.pos, dtype=float)
        position = tuple(event.position)
        yield
        moved = 0.0
        while event.type == "mouse_move":
            moved = max(moved, float(np.abs(np.asarray(event.pos, dtype=float) - start).max()))
            yield
        if moved <= 3:  # screen px: a click, not a pan
            self.probe_position(position)

    def _on_mouse_move(self, viewer, event):
        if self._hover.value and "Shift" in event.modifiers:
            self.probe_position(tuple(event.position))

    def probe_position(self, position) -> None:
        """Probe at a napari world position (the viewer's coordinates)."""
        layer = self._image.value
        if layer is None:
            show_error("Add an image layer to probe its attention.")
            return
        data = np.asarray(layer.world_to_data(position), dtype=float)
        self.probe(tuple(data[-2:]))  # level-0 data pixels are world px (an RGB layer has 2 dims too)

    def probe(self, world_yx) -> None:
        """Probe at world (level-1 pixel) coordinates `(y, x)`; runs off the GUI thread."""
        layer = self._image.value
        if layer is None:
            show_error("Add an image layer to probe its attention.")
            return
        self._last_point = (float(world_yx[0]), float(world_yx[1]))
        self._pending = ProbeRequest(self._key(), image_source(layer), self._last_point,
                                     _choice(self._layer.value), _choice(self._head.value),
                                     int(self._query_level.value))
        self._t_request = time.perf_counter()
        if self._job is None or not self._job.running:
            self._start_next()

    def _reprobe(self, *_):
        if self._last_point is not None and self._image.value is not None:
            self.probe(self._last_point)

    def _key(self) -> tuple:
        layer = self._image.value
        return (id(layer), str(self._model.value), self._levels.value.strip())

    # ---------------------------------------------------------------- worker
    def _start_next(self) -> None:
        if self._pending is None:
            return
        request, self._pending = self._pending, None
        job = EngineJob(lambda progress, cancel: self._compute(request), description="attention probe",
                        show_progress=False)
        job.succeeded.connect(self._on_result)
        job.failed.connect(self._on_failed)
        job.ended.connect(self._start_next)
        self._status.value = "Probing..."
        self._job = job.start()

    def _compute(self, request: ProbeRequest):
        """Worker thread: (re)open the session when image/model/levels changed, then probe."""
        t0 = time.perf_counter()
        if self.session is None or request.key != self._session_key:
            self.session = open_probe_session(request.source, request.key[1], request.key[2])
            self._session_key = request.key
        if request.query_level not in self.session.levels:  # the picker still offers a default level
            request.query_level = int(self.session.levels[0])
        view, result, info = run_probe(self.session, request)
        info["compute_s"] = time.perf_counter() - t0
        return view, result, info

    def _on_failed(self, message: str) -> None:
        self._status.value = "Probe failed."
        show_error(message)

    def _on_result(self, output) -> None:
        t_gui = time.perf_counter()
        view, result, info = output
        info["delivery_s"] = t_gui - self._t_request - info["compute_s"]
        layer = self._image.value
        pixel_size = image_pixel_size(layer) if layer is not None else None
        self.overlay.show(view, pixel_size)
        self.plot.set_shares(view.levels, info["query_share"], info.get("tile_share"))
        self._update_choices(view.levels, info)
        self.last_view, self.last_result, self.last_info = view, result, info
        info["gui_s"] = time.perf_counter() - t_gui
        self.last_latency_s = time.perf_counter() - self._t_request
        self._status.value = (f"Query at y={view.query_world_yx[0]:.0f}, x={view.query_world_yx[1]:.0f}; "
                              f"{self.last_latency_s * 1000:.0f} ms")

    def _update_choices(self, levels, info) -> None:
        layers = ["last", "rollout", *[str(i) for i in range(info.get("num_layers", 0))]]
        heads = ["mean", *[str(i) for i in range(info.get("heads", 0))]]
        for widget, choices in ((self._layer, layers), (self._head, heads),
                                (self._query_level, [int(v) for v in levels])):
            if list(widget.choices) != choices:
                with widget.changed.blocked():
                    value = widget.value
                    widget.choices = choices
                    if value in choices:
                        widget.value = value

    def clear(self, *_) -> None:
        self.overlay.clear()
        self.plot.clear()
        self._last_point = None

    def feature_view(self, *_):
        """PCA-RGB of the encoder's finest-level features over the current view (engine `predict`)."""
        layer = self._image.value
        if layer is None:
            show_error("Add an image layer to see its features.")
            return None
        try:
            region = clip_region(view_region(self.viewer, image_pixel_size(layer)), image_shape_yx(layer))
        except ValueError as exc:
            show_error(str(exc))
            return None
        kw = {"source": image_source(layer), "model": str(self._model.value),
              "levels": self._levels.value.strip() or None, "region": region, "out": self._scratch("features")}
        job = EngineJob(lambda progress, cancel: run_feature_view(kw, progress, cancel), description="feature view")
        job.succeeded.connect(lambda path: show_features(self.viewer, path, image_pixel_size(layer)))
        job.failed.connect(show_error)
        self._feature_job = job.start()
        return job

    def _scratch(self, kind: str) -> str:
        """A fresh store path in this widget's scratch folder (the previous result's store is removed)."""
        import shutil
        import tempfile

        if getattr(self, "_scratch_dir", None) is None:
            self._scratch_dir = Path(tempfile.mkdtemp(prefix="napari-muvit-attention-"))
        for old in sorted(self._scratch_dir.glob(f"{kind}_*.zarr"))[:-1]:
            shutil.rmtree(old, ignore_errors=True)
        return str(self._scratch_dir / f"{kind}_{time.time_ns()}.zarr")


def image_source(layer):
    """What the engine opens for an image layer: the file it came from, else its (multiscale) data."""
    source = (layer.metadata.get(META_KEY) or {}).get("source")
    return source if source else layer.data


def image_shape_yx(layer) -> tuple[int, int]:
    """Level-1 `(Y, X)` of an image layer (multiscale or not, RGB or not)."""
    shape = tuple(layer.level_shapes[0] if layer.multiscale else layer.data.shape)
    return tuple(int(v) for v in (shape[-3:-1] if layer.rgb else shape[-2:]))


def run_feature_view(kw: dict, progress, cancel):
    """Worker thread: the model's encoder over the region -> PCA-RGB store (`engine.predict`)."""
    import dataclasses

    from napari_muvit.data import open_pyramid
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe
    from napari_muvit.model import load_model

    model = load_model(kw["model"])
    encoder = model.encoder
    if model is not encoder:  # a segmenter or classifier: show what its encoder sees
        encoder.card = dataclasses.replace(model.card, task="encoder")
    recipe = Recipe(source=kw["source"] if isinstance(kw["source"], (str, Path)) else "", model=kw["model"],
                    levels=kw["levels"], region=kw["region"], out=kw["out"])
    result = predict(recipe, progress, cancel, model=encoder, pyramid=open_pyramid(kw["source"]))
    return result.path


def show_features(viewer, path, pixel_size=None):
    """The PCA-RGB store as one RGB Image layer on the region it covers (GUI thread)."""
    import dask.array as da
    import zarr

    root = zarr.open_group(str(path), mode="r")
    meta = dict(root.attrs.get("napari_muvit", {}))
    factor = float((meta.get("image") or {}).get("factor", 1))
    y0, _, x0, _ = meta.get("region") or (0, 0, 0, 0)
    rgb = da.moveaxis(da.from_zarr(root["0"]), 0, -1)
    scale, translate = level_transform(factor, pixel_size, 2, origin=(y0, x0))
    kwargs = {"name": "MuViT features (PCA RGB)", "rgb": True, "scale": scale, "translate": translate,
              "contrast_limits": (0.0, 1.0), "opacity": 0.8,
              "metadata": {META_KEY: {"kind": "features", "level": factor, "store": str(path)}}}
    return add_or_update(viewer, (rgb, kwargs, "image"))


def pick_first(combo) -> None:
    """A nullable layer picker left empty takes the first layer offered."""
    if combo.value is None:
        options = [c for c in combo.choices if c is not None]
        if options:
            combo.value = options[0]


def _choice(value) -> str | int:
    """Combo text -> the engine's argument: 'last'/'rollout'/'mean' stay, digits become an index."""
    return int(value) if str(value).isdigit() else str(value)


# ------------------------------------------------------------------ engine calls (worker thread)
def open_probe_session(source, model: str, levels: str):
    """The engine's per-tile cache for this image, model and levels (the model is loaded once)."""
    from napari_muvit.engine import attention as engine_attention

    return engine_attention.open_session(source, model, levels or None)


def run_probe(session, request: ProbeRequest):
    """One probe on the session -> `(ProbeView, AttentionResult, info)` for the GUI thread."""
    from napari_muvit.engine import attention as engine_attention

    result = engine_attention.attention_probe(session, request.point_yx, layer=request.layer,
                                              head=request.head, query_level=request.query_level)
    levels = tuple(int(v) for v in result.levels or session.levels)
    view = ProbeView(levels, [m for m, _ in result.maps], [b for _, b in result.maps],
                     np.asarray(result.query_world_yx, dtype=float), request.query_level, session.patch_size)
    info = dict(result.info)
    info["query_share"] = np.asarray(result.level_share, dtype=float)
    info["tile_share"] = tile_level_share(session, request)
    return view, result, info


TILE_SHARE_QUERIES = 64  # query tokens averaged for the tile's share (evenly spaced when there are more)


def tile_level_share(session, request: ProbeRequest) -> np.ndarray:
    """Share of attention per level averaged over the query level's tokens of the probed tile, `(L,)`.

    Uses the engine's `attention_row` on the session's cached weights for up to `TILE_SHARE_QUERIES`
    evenly spaced query tokens; cached per tile, layer, head and query level.
    """
    from napari_muvit.engine.attention import attention_row

    entry, origin = session.entry_for(request.point_yx)  # cached: the probe just ran on this tile
    key = (origin, request.layer, request.head, request.query_level)
    cache = getattr(session, "_widget_tile_share", None)
    if cache is not None and cache[0] == key:
        return cache[1]
    gh, gw = entry["grid"]
    n = gh * gw
    level_index = list(session.levels).index(int(request.query_level))
    queries = np.unique(np.linspace(0, n - 1, min(n, TILE_SHARE_QUERIES)).round().astype(int)) + level_index * n
    rows = np.stack([attention_row(entry["attn"], int(q), request.layer, request.head) for q in queries])
    share = rows.reshape(len(queries), len(session.levels), n).sum(-1)
    share = (share / share.sum(-1, keepdims=True)).mean(0)
    session._widget_tile_share = (key, share)
    return share
