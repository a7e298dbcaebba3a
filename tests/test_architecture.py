"""The import structure of the package, read from the source (`scripts/import_graph.py`): no import cycles in
model/, data/, engine/ or cli/, imports only point down the layers, and no napari/Qt/magicgui below widgets/."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "napari_muvit" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_no_import_cycles_in_model_data_engine_cli(import_graph):
    assert import_graph.core_cycles(packages=("model", "data", "engine", "cli")) == []


def test_imports_only_point_down(import_graph):
    assert import_graph.upward_imports() == []


def test_no_gui_imports_below_widgets(import_graph):
    assert import_graph.gui_imports_below_widgets() == []


def test_the_graph_sees_the_known_edges(import_graph):
    graph = import_graph.import_graph()
    # a relative module-level import, a relative import of a sibling module, an absolute one in a function
    assert graph["napari_muvit.engine.attention"]["napari_muvit.engine.attention_share"][1] is True
    assert graph["napari_muvit.data.synthetic"]["napari_muvit.data.synthetic_writer"][1] is True
    assert graph["napari_muvit.cli.demo"]["napari_muvit.widgets.predict.dock"][1] is False


def test_checks_find_cycles_through_functions_and_relative_imports(import_graph, tmp_path):
    src = _write(tmp_path, {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/a.py": "from . import b\n",
        "data/b.py": "def f():\n    from .c import g\n",
        "data/c.py": "from napari_muvit.data.a import x\n",
        "data/d.py": "from .a import x\n",  # imports into the cycle, is not part of it
        "engine/__init__.py": "",
        "engine/p.py": "import napari_muvit.engine.q\n",
        "engine/q.py": "from ..data import d\nfrom .p import y\n",
        "model/__init__.py": "",
        "model/m.py": "def f():\n    from napari_muvit.engine import p\n    import qtpy.QtWidgets\n",
        "cli/__init__.py": "",
        "cli/run.py": "import napari\n\ndef f():\n    from napari_muvit.widgets import w\n",
        "cli/demo.py": "def f():\n    import napari\n    from napari_muvit.widgets import w\n",
        "widgets/__init__.py": "",
        "widgets/w.py": "import napari\nfrom napari_muvit.cli import run\n",
    })
    assert import_graph.core_cycles(src) == [
        ["napari_muvit.data.a", "napari_muvit.data.b", "napari_muvit.data.c"],
        ["napari_muvit.engine.p", "napari_muvit.engine.q"],
    ]
    # cli may open the docks inside a function (the demo command), never at module level
    assert import_graph.upward_imports(src) == [
        "napari_muvit.model.m:2 -> napari_muvit.engine.p",
        "napari_muvit.widgets.w:2 -> napari_muvit.cli.run",
    ]
    assert import_graph.gui_imports_below_widgets(src) == [
        "napari_muvit.cli.run:1 -> napari",
        "napari_muvit.model.m:3 -> qtpy",
    ]
