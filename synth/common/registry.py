"""Names to classes, one table per kind of thing (generators, detectors, diffusion backends). The CLI's
choices, recipe checks and the loading of saved models all read these tables; a class is imported
only when its name is used, so listing the names costs nothing."""

from __future__ import annotations

import importlib
from typing import Mapping


class Registry:
    """``{name: "package.module:Class"}``, loaded on first use."""

    def __init__(self, what: str, entries: Mapping[str, str]) -> None:
        self.what = what
        self._entries = dict(entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> type:
        """The class registered as ``name``; an unknown name is an error listing the known ones."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.what} {name!r}; choose from {', '.join(self._entries)}")
        module, _, attribute = self._entries[name].partition(":")
        return getattr(importlib.import_module(module), attribute)

    def name_of(self, klass: type) -> str:
        """The name a class is registered under."""
        target = f"{klass.__module__}:{klass.__qualname__}"
        for name, entry in self._entries.items():
            if entry == target:
                return name
        raise ValueError(f"{klass.__name__} is not a registered {self.what}")
