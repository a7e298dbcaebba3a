"""The package installs as a napari plugin, from an editable install and from a wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_discovered_by_npe2():
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-muvit")
    assert manifest.name == "napari-muvit"
    # the manifest npe2 found is the repository-root file (editable install reads it through the link)
    root = yaml.safe_load((ROOT / "napari.yaml").read_text())
    assert manifest.display_name == root["display_name"]
    assert len(manifest.contributions.commands or []) == len(root["contributions"]["commands"])


def test_manifest_validates():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-muvit"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_manifest_is_the_root_manifest():
    packaged = ROOT / "src" / "napari_muvit" / "napari.yaml"
    assert packaged.read_bytes() == (ROOT / "napari.yaml").read_bytes()


@pytest.mark.slow
def test_wheel_ships_the_manifest(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("napari_muvit-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        manifest = zf.read("napari_muvit/napari.yaml")
        names = set(zf.namelist())
        entry_points = zf.read(next(n for n in zf.namelist() if n.endswith("entry_points.txt"))).decode()
    assert manifest == (ROOT / "napari.yaml").read_bytes()
    assert "napari_muvit:napari.yaml" in entry_points
    # the built-in demo model loads offline from an installed wheel
    assert {f"napari_muvit/model/demo/{f}" for f in ("config.yaml", "model.pth", "muvit.yaml")} <= names


def test_cli_help_lists_commands():
    result = subprocess.run([sys.executable, "-m", "napari_muvit.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "usage: napari-muvit" in result.stdout


def test_cli_unknown_command_exits_2():
    result = subprocess.run([sys.executable, "-m", "napari_muvit.cli", "frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1


def test_core_packages_do_not_import_napari():
    code = (
        "import sys, napari_muvit.model, napari_muvit.data, napari_muvit.engine, napari_muvit.cli;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide6')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
