"""Last-used widget settings, kept in one small JSON file per widget.

Location: ``$NAPARI_MUVIT_SETTINGS_DIR`` when set (tests, shared machines), else the user's config
directory (``~/.config/napari-muvit`` on Linux). A missing or unreadable file gives the defaults: settings
are a convenience and must never stop the widget from opening.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

ENV_DIR = "NAPARI_MUVIT_SETTINGS_DIR"


def settings_dir() -> Path:
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir("napari-muvit", appauthor=False))


def settings_path(widget: str) -> Path:
    return settings_dir() / f"{widget}.json"


def load_settings(widget: str, defaults: dict | None = None) -> dict:
    """Saved values for ``widget`` on top of ``defaults`` (unknown keys are ignored)."""
    out = dict(defaults or {})
    try:
        saved = json.loads(settings_path(widget).read_text())
    except (OSError, ValueError):
        return out
    if not isinstance(saved, dict):
        return out
    for key, value in saved.items():
        if defaults is None or key in defaults:
            out[key] = value
    return out


def save_settings(widget: str, values: dict) -> Path | None:
    """Write ``values`` (JSON-serialisable) atomically; returns the path, or None if it cannot be written."""
    path = settings_path(widget)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{widget}.", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(values, fh, indent=1, sort_keys=True, default=str)
        os.replace(tmp, path)  # atomic: a crash never leaves half a file
    except OSError:
        return None
    return path
