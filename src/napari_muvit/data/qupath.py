"""QuPath GeoJSON annotations <-> `Region` objects in world coordinates.

**Reading** accepts what QuPath writes (*File > Export objects as GeoJSON*, any version): a
``FeatureCollection``, a JSON list of ``Feature`` objects, a single ``Feature``, or a bare geometry; geometry
``Polygon`` / ``MultiPolygon`` (holes kept) or a ``GeometryCollection`` of them. Points and lines have no
area and are skipped (counted in `GeoJsonRegions.skipped`). The class comes from
``properties.classification`` (``{"name", "color": [r, g, b]}``, or the older ``"colorRGB"`` packed integer,
or a plain name), the name from ``properties.name`` (else the class and a number; names are made unique).

**Coordinates.** QuPath places objects on the full-resolution pixel grid with pixel *edges* on integers
(pixel ``j`` spans ``[j, j+1)``); the world frame puts level-1 pixel *centres* on integers. Reading
converts once with `geometry.edge_to_centre_frame` (subtract 0.5) and writing with
`geometry.centre_to_edge_frame`; GeoJSON is ``[x, y]``, regions are ``(y, x)``. A slide's physical
translation does not enter: both frames count full-resolution pixels from the slide's first pixel.

**Writing** gives a ``FeatureCollection`` of ``annotation`` features (QuPath 0.3+ schema: ``objectType``,
``name``, ``classification {name, color}``, ``measurements`` as a name -> number object), rings closed,
exteriors counter-clockwise and holes clockwise in ``x, y`` (RFC 7946), so QuPath's *Import objects*
reads it back and shapely/geojson validate it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .geometry import centre_to_edge_frame, edge_to_centre_frame
from .regions import Region


@dataclass
class GeoJsonRegions:
    """Regions read from a GeoJSON document, and how many features had no area (points, lines)."""

    regions: list = field(default_factory=list)
    skipped: int = 0


# ------------------------------------------------------------------------------------------ reading
def read_qupath(path) -> list[Region]:
    """Polygon annotations of a QuPath GeoJSON file as `Region` objects in world ``(y, x)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {str(path)!r} does not exist; give a GeoJSON file exported from QuPath.")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"annotation file {str(path)!r} is not JSON; give a GeoJSON file exported from QuPath.") from exc
    found = regions_from_geojson(doc, where=repr(str(path)))
    if not found.regions:
        raise ValueError(f"annotation file {str(path)!r} holds no Polygon or MultiPolygon feature; "
                         "export annotations (areas, not points or lines) from QuPath.")
    return found.regions


def regions_from_geojson(doc, where: str = "the GeoJSON") -> GeoJsonRegions:
    """`GeoJsonRegions` of a parsed GeoJSON document (see the module docstring for what is accepted)."""
    out = GeoJsonRegions()
    names: dict[str, int] = {}
    for i, feature in enumerate(_features(doc, where)):
        props = feature.get("properties") or {}
        polygons = _polygons(feature.get("geometry"), f"feature {i} of {where}")
        if not polygons:
            out.skipped += 1
            continue
        cls, color = _classification(props)
        name = str(props.get("name") or f"{cls or 'annotation'} {i + 1}")
        names[name] = names.get(name, 0) + 1
        if names[name] > 1:
            name = f"{name} ({names[name]})"
        keep = {k: v for k, v in props.items() if k not in ("name", "classification")}
        if feature.get("id") is not None:
            keep["id"] = feature["id"]
        out.regions.append(Region(name, polygons, classification=cls, color=color, properties=keep))
    return out


def _features(doc, where) -> list[dict]:
    if isinstance(doc, list):
        feats = doc
    elif isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        feats = doc.get("features") or []
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        feats = [doc]
    elif isinstance(doc, dict) and ("coordinates" in doc or doc.get("type") == "GeometryCollection"):
        feats = [{"type": "Feature", "geometry": doc, "properties": {}}]
    else:
        raise ValueError(f"{where} is not a GeoJSON FeatureCollection, Feature list, Feature or geometry.")
    bad = [f for f in feats if not isinstance(f, dict)]
    if bad:
        raise ValueError(f"{where} holds {bad[0]!r} where a GeoJSON Feature object was expected.")
    return feats


def _polygons(geom, where) -> list:
    """``[[exterior (N, 2) yx world, hole, ...], ...]`` of a geometry; [] for points and lines."""
    if not isinstance(geom, dict):
        return []
    kind = geom.get("type")
    if kind == "GeometryCollection":
        return [p for g in geom.get("geometries") or [] for p in _polygons(g, where)]
    coords = geom.get("coordinates")
    if kind == "Polygon":
        return [_rings(coords, where)]
    if kind == "MultiPolygon":
        return [_rings(c, where) for c in coords or []]
    return []


def _rings(rings, where) -> list[np.ndarray]:
    out = []
    for ring in rings or []:
        xy = np.asarray(ring, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] < 2:
            raise ValueError(f"{where} has a polygon ring that is not a list of [x, y] positions.")
        out.append(edge_to_centre_frame(xy[:, 1::-1]))  # [x, y] pixel edges -> (y, x) world
    if not out:
        raise ValueError(f"{where} has a Polygon without rings.")
    return out


def _classification(props) -> tuple[str | None, tuple[int, int, int] | None]:
    cls = props.get("classification")
    if isinstance(cls, str):
        return cls, None
    if not isinstance(cls, dict) or not cls.get("name"):
        return None, None
    color = cls.get("color")
    if isinstance(color, (list, tuple)) and len(color) >= 3:
        rgb = tuple(int(c) for c in color[:3])
    elif isinstance(cls.get("colorRGB"), int):  # QuPath 0.2: packed (A)RGB, possibly negative
        v = cls["colorRGB"] & 0xFFFFFF
        rgb = ((v >> 16) & 255, (v >> 8) & 255, v & 255)
    else:
        rgb = None
    return str(cls["name"]), rgb


# ------------------------------------------------------------------------------------------ writing
def regions_to_geojson(regions, measurements: dict | None = None) -> dict:
    """A QuPath-readable ``FeatureCollection`` of ``regions``; ``measurements``: region name -> {name: number}."""
    features = []
    for region in regions:
        polys = [[_closed_ring(r, hole=j > 0) for j, r in enumerate(rings)] for rings in region.polygons]
        geometry = ({"type": "Polygon", "coordinates": polys[0]} if len(polys) == 1
                    else {"type": "MultiPolygon", "coordinates": polys})
        props = {k: v for k, v in region.properties.items() if k not in ("id", "measurements")}
        props.update({"objectType": props.get("objectType", "annotation"), "name": region.name})
        if region.classification:  # without a colour QuPath uses its own for the class
            props["classification"] = {"name": region.classification}
            if region.color:
                props["classification"]["color"] = [int(c) for c in region.color[:3]]
        values = dict(region.properties.get("measurements") or {}) if isinstance(
            region.properties.get("measurements"), dict) else {}
        values.update((measurements or {}).get(region.name, {}))
        if values:
            props["measurements"] = {str(k): float(v) for k, v in values.items() if v is not None}
        feature = {"type": "Feature", "geometry": geometry, "properties": props}
        if region.properties.get("id") is not None:
            feature["id"] = region.properties["id"]
        features.append(feature)
    return {"type": "FeatureCollection", "features": features}


def write_qupath(regions, path, measurements: dict | None = None) -> Path:
    """Write `regions_to_geojson` to ``path`` (temporary sibling, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(regions_to_geojson(regions, measurements), indent=1))
    os.replace(tmp, path)
    return path


def _closed_ring(ring_yx: np.ndarray, hole: bool) -> list:
    xy = centre_to_edge_frame(np.asarray(ring_yx, dtype=np.float64)[:, ::-1])
    x, y = xy[:, 0], xy[:, 1]
    ccw = (np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) > 0
    if ccw == hole:  # RFC 7946: exterior counter-clockwise, holes clockwise
        xy = xy[::-1]
    xy = np.vstack([xy, xy[:1]])
    return [[_num(a), _num(b)] for a, b in xy]


def _num(v: float):
    """Whole numbers as ints (QuPath's own files), others as floats."""
    return int(v) if float(v).is_integer() else float(v)



# ------------------------------------------------------------------------------------------ masks
def annotation_mask(path, slide_shape, max_side: int = 4096) -> tuple[np.ndarray, float, float]:
    """A prediction mask from a GeoJSON file: ``(mask bool, f, f)`` with ``f`` world px per mask pixel, the
    smallest power of two that keeps the mask within ``max_side`` px a side (a level-``f`` pixel is in the
    mask when its centre lies in an annotation). Used by `Recipe.mask` when it names a ``.geojson`` file."""
    from .regions import region_mask

    regions = read_qupath(path)
    f = 1
    while max(int(s) for s in slide_shape[-2:]) > f * max_side:
        f *= 2
    mask = region_mask(regions, slide_shape[-2:], f)
    if not mask.any():
        raise ValueError(f"the annotations of {str(path)!r} cover no part of the slide (of {slide_shape[-2]} x "
                         f"{slide_shape[-1]} px); export them from this slide's QuPath project.")
    return mask, float(f), float(f)


def annotation_labels(path, slide_shape, class_names=None):
    """Fine-tuning labels from a GeoJSON file: ``(lazy (Y, X) label image, class names)`` (`regions.label_image`:
    0 = unlabelled, ``k + 1`` = class ``k``). Unclassified annotations are left out; without ``class_names``
    the classes are the annotations' classifications in alphabetical order."""
    from .regions import label_image

    regions = [r for r in read_qupath(path) if r.classification]
    if not regions:
        raise ValueError(f"no annotation in {str(path)!r} has a classification; classify the annotations in "
                         "QuPath (e.g. Tumor, Stroma) to train on them.")
    names = list(class_names) if class_names else sorted({r.classification for r in regions})
    return label_image(regions, names, slide_shape[-2:]), names
