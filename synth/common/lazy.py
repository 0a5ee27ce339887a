"""Lazy package exports (PEP 562): a package lists what it offers, and a name's module is imported
the first time the name is used, so that ``import synth`` (or ``curate``, ``detectors``) does not pull
in torch, scikit-learn or pyarrow for work that never touches them."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` from ``{name: ".module"}``; a loaded name is
    kept in the package so that the next use is a plain attribute lookup."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
