"""A dock's scratch folder for the stores it shows: one fresh store per result, older ones removed."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path


class ScratchFolder:
    """Temporary folder (made on first use) holding `<kind>_<ns>.zarr` stores of one widget."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.path: Path | None = None

    def fresh(self, kind: str) -> Path:
        """A new store path for `kind`; of the older `kind` stores only the newest (shown now) is kept."""
        if self.path is None:
            self.path = Path(tempfile.mkdtemp(prefix=self.prefix))
        for old in sorted(self.path.glob(f"{kind}_*.zarr"))[:-1]:  # the next result replaces the newest
            shutil.rmtree(old, ignore_errors=True)
        return self.path / f"{kind}_{time.time_ns()}.zarr"
