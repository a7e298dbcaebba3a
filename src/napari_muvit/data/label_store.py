"""Class names stored with an OME-Zarr label image, and the one label convention of the project.

Every label image napari-muvit writes or trains on uses one convention: value ``k + 1`` is class ``k``
(``class_names[k]``) and ``0`` is unlabelled / not predicted. That holds for prediction stores
(``labels/prediction``), synthetic ground truth (``labels/ground_truth``, generator version 3 on) and
scribbles. The ``image-label.properties`` of such a group name every value (``{"label-value": k + 1,
"class": class_names[k]}``), so the class list can be read back from the store.

Synthetic stores written by generator versions 1-2 used ``0`` for their background class; they are
recognised by their ``muvit.generator_version`` and read only when the caller says 0 is a class.
"""

from __future__ import annotations

from pathlib import Path

SYNTHETIC_GENERATOR = "napari_muvit.data.synthetic"
FIRST_ONE_BASED_VERSION = 3  # synthetic generator version from which ground truth uses k + 1 = class k


def label_group(path):
    """The OME-Zarr label image group at ``path`` (the group itself, its ``labels/`` parent or the image
    above it: the first listed label image), or None when ``path`` is not such a zarr group."""
    import zarr

    path = Path(path)
    if not path.is_dir():
        return None
    try:
        node = zarr.open_group(str(path), mode="r")
    except Exception:  # an array, a folder that is no zarr group: nothing stored to read
        return None
    for _ in range(3):  # image -> labels -> labels/<name>
        attrs = node.attrs.asdict()
        ome = attrs.get("ome", attrs)
        if "image-label" in ome:
            return node
        groups = sorted(node.group_keys())
        if "labels" in groups:
            node = node["labels"]
        elif ome.get("labels"):
            name = ome["labels"][0]
            if name not in groups:
                return None
            node = node[name]
        else:
            return None
    return None


def _synthetic_version(attrs: dict) -> int | None:
    muvit = attrs.get("muvit") or {}
    if muvit.get("generator") != SYNTHETIC_GENERATOR:
        return None
    return int(muvit.get("generator_version", 1))


def stored_class_names(path, class_names=None, background_class=None) -> list[str] | None:
    """Class names for training on the label image at ``path``: ``class_names`` if given, else the names its
    ``image-label.properties`` give values ``1..K`` (None when it has none).

    ``background_class`` (a foreign dense label image whose 0 is a class) returns the names of values
    ``1..K`` only; the caller adds the background class in front. Raises ``ValueError`` (one sentence) for
    synthetic ground truth of generator versions 1-2 (0 = background) without ``background_class``, and for
    newer synthetic ground truth with it (its background is already value 1).
    """
    group = label_group(path) if isinstance(path, (str, Path)) else None
    if group is None:
        return None if class_names is None else list(class_names)
    attrs = group.attrs.asdict()
    version = _synthetic_version(attrs)
    if version is not None and version < FIRST_ONE_BASED_VERSION and not background_class:
        raise ValueError(
            f"{str(path)!r} is synthetic ground truth from generator version {version}, where 0 is the "
            "background class; write the slide again with `napari-muvit synth` (background = 1) or pass "
            "--background-class background."
        )
    if version is not None and version >= FIRST_ONE_BASED_VERSION and background_class:
        raise ValueError(
            f"{str(path)!r} already stores its background class as label value 1 (0 = unlabelled); "
            f"leave out --background-class {background_class!r}."
        )
    if class_names is not None:
        return list(class_names)
    ome = attrs.get("ome", attrs)
    props = {int(p["label-value"]): str(p["class"]) for p in ome["image-label"].get("properties") or []
             if "label-value" in p and "class" in p}
    values = sorted(v for v in props if v > 0)
    if not values or values != list(range(1, len(values) + 1)):
        return None  # no names, or gaps: the label values themselves stay the classes
    names = [props[v] for v in values]
    if version is not None:
        # synthetic labels are max-downsampled: the coarsest level holds the largest value, and region types
        # a small slide never shows are left out (as when the classes are the label values)
        path0 = ome["multiscales"][0]["datasets"][-1]["path"]
        names = names[: int(group[path0][...].max())]
    return names
