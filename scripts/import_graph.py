"""The import graph of napari_muvit, read from the source with `ast`: its cycles and its upward imports.

Every ``import`` counts, also those inside functions; relative imports are resolved, and
``from pkg import name`` points at ``pkg.name`` when that is a module, else at ``pkg`` (its ``__init__``).
The parent packages that Python runs first when a submodule is imported are not counted as edges.

Layering: imports only point down, ``model``/``data`` <- ``engine`` <- ``cli``/``widgets`` (``model`` and
``data`` do not import each other); nothing below ``widgets`` imports napari, Qt or magicgui. One exception:
``cli`` may import ``widgets`` and the GUI inside a function (``napari-muvit demo`` opens the docks), never at
module level.

    python scripts/import_graph.py            # cycles among data, engine, model, cli; layering breaks

Exit status 1 when it finds a cycle or an upward import. ``tests/test_architecture.py`` runs the same checks.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "napari_muvit"
SRC = Path(__file__).resolve().parents[1] / "src"
CORE = ("data", "engine", "model", "cli")  # the packages whose modules the cycle report covers
# imports only point down: a package may import those of a lower rank, never a higher one
RANK = {"model": 0, "data": 0, "engine": 1, "cli": 2, "widgets": 2}
GUI_ROOTS = ("napari", "qtpy", "magicgui", "PyQt5", "PyQt6", "PySide2", "PySide6")
LAZY_GUI = ("cli",)  # packages that may import widgets and the GUI inside a function (the demo command)


def module_files(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package (``__init__`` as the package)."""
    out = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """``(imported name, line, at module level)`` of every import in the module, internal targets resolved
    to modules; an import inside a function (at any depth) is not at module level."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    in_function = {
        id(inner)
        for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for inner in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        top = id(node) not in in_function
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in modules else target, node.lineno, top))
    return found


def _edges(src: Path, internal: bool) -> dict[str, dict[str, tuple[int, bool]]]:
    modules = module_files(src)
    graph: dict[str, dict[str, tuple[int, bool]]] = {}
    for name, path in modules.items():
        edges: dict[str, tuple[int, bool]] = {}
        for target, line, top in _imports(name, path, modules):
            if not internal:
                target = target.split(".")[0]
                if target == PACKAGE:
                    continue
            else:
                # ``import a.b.c`` names a module; keep the longest prefix that is one of ours
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target not in modules or target == name:
                    continue
            first = edges.get(target)
            # the first module-level import if there is one, else the first import in a function
            if first is None or (top and not first[1]) or (top == first[1] and line < first[0]):
                edges[target] = (line, top)
        graph[name] = edges
    return graph


def import_graph(src: Path = SRC) -> dict[str, dict[str, tuple[int, bool]]]:
    """Module -> {imported internal module: (line, at module level)}, over every module of the package."""
    return _edges(src, internal=True)


def external_imports(src: Path = SRC) -> dict[str, dict[str, tuple[int, bool]]]:
    """Module -> {top-level name of a third-party import: (line, at module level)}."""
    return _edges(src, internal=False)


def strongly_connected(graph: dict) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted, largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(components, key=lambda c: (-len(c), c))


def package_of(module: str) -> str | None:
    """``napari_muvit.engine.training.recipe`` -> ``engine``; ``None`` for the top-level package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def core_cycles(src: Path = SRC, packages=CORE) -> list[list[str]]:
    """Import cycles among the modules of ``packages`` (edges between those modules only)."""
    graph = import_graph(src)
    keep = {m for m in graph if package_of(m) in packages}
    return strongly_connected({m: {t: e for t, e in graph[m].items() if t in keep} for m in keep})


def upward_imports(src: Path = SRC) -> list[str]:
    """``"module:line -> target"`` for every import that points up or across the package ranks (``cli`` ->
    ``widgets`` inside a function excepted)."""
    bad = []
    for module, edges in import_graph(src).items():
        here = package_of(module)
        for target, (line, top) in edges.items():
            there = package_of(target)
            if here not in RANK or there not in RANK or here == there or RANK[there] < RANK[here]:
                continue
            if here in LAZY_GUI and there == "widgets" and not top:
                continue
            bad.append(f"{module}:{line} -> {target}")
    return sorted(bad)


def gui_imports_below_widgets(src: Path = SRC) -> list[str]:
    """``"module:line -> name"`` for every napari/Qt/magicgui import in ``model``, ``data`` or ``engine``
    (also inside functions) and at module level in ``cli``."""
    bad = []
    for module, roots in external_imports(src).items():
        here = package_of(module)
        if here not in ("model", "data", "engine", "cli"):
            continue
        for root, (line, top) in roots.items():
            if root in GUI_ROOTS and (top or here not in LAZY_GUI):
                bad.append(f"{module}:{line} -> {root}")
    return sorted(bad)


def main() -> int:
    cycles = core_cycles()
    print(f"import cycles among {', '.join(CORE)}: {len(cycles)}")
    graph = import_graph()
    for component in cycles:
        print("  " + " <-> ".join(m.removeprefix(PACKAGE + ".") for m in component))
        members = set(component)
        for m in component:
            for t, (line, top) in sorted(graph[m].items()):
                if t in members:
                    where = "" if top else " (in a function)"
                    print(f"    {m.removeprefix(PACKAGE + '.')}:{line} imports {t.removeprefix(PACKAGE + '.')}{where}")
    upward = upward_imports()
    print(f"imports pointing up or across packages: {len(upward)}")
    for line in upward:
        print("  " + line)
    gui = gui_imports_below_widgets()
    print(f"napari/Qt/magicgui imports below widgets: {len(gui)}")
    for line in gui:
        print("  " + line)
    return 1 if cycles or upward or gui else 0


if __name__ == "__main__":
    sys.exit(main())
