"""Package attributes imported on first use (PEP 562), shared by the packages that defer heavy imports."""

from __future__ import annotations

from importlib import import_module


def lazy_attributes(package: str, names: dict[str, str], namespace: dict):
    """``(__getattr__, __dir__)`` for ``package``: each key of ``names`` is imported from the relative module
    its value names (e.g. ``".pyramid"``) on first access and then kept in ``namespace`` (the package's
    ``globals()``)."""

    def __getattr__(name: str):
        if name in names:
            value = getattr(import_module(names[name], package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
