"""The manifest: one JSON line per written sample (source image, generator, parameters, seed, files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence, TypeVar

import numpy as np

from ..common.storage import Store, as_store
from .layout import MANIFEST


T = TypeVar("T")


def evenly_spaced(items: Sequence[T], n: int) -> list[T]:
    """At most ``n`` of ``items``, spread evenly from the first to the last: the few samples of a
    generator that a report shows or tests, drawn the same way everywhere."""
    if not len(items) or n < 1:
        return []
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, min(n, len(items))).round().astype(int))]


def manifest_lines(records: Iterable[dict]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)


class Manifest:
    """Append-only JSON-lines file; a line torn by an interrupted run is dropped when it is loaded."""

    def __init__(self, root: str | Path | Store) -> None:
        self.store = as_store(root)
        self.name = MANIFEST

    @property
    def path(self) -> Path:
        """The local file (local datasets only)."""
        return Path(self.store.path(self.name))

    def exists(self) -> bool:
        return self.store.exists(self.name)

    def load(self) -> dict[int, dict]:
        """Records by sample index (a repeated index keeps its last record)."""
        records: dict[int, dict] = {}
        if not self.store.exists(self.name):
            return records
        for line in self.store.read_bytes(self.name).splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn last line
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[int(record["index"])] = record
        return records

    def indices_by_generator(self) -> dict[str, list[int]]:
        """The sample indices of each generator, in index order."""
        out: dict[str, list[int]] = {}
        for index, record in sorted(self.load().items()):
            out.setdefault(record["generator"], []).append(index)
        return out

    def rewrite(self, records: Iterable[dict]) -> None:
        """Replace the whole file atomically (used to drop lines without data after a crash)."""
        self.store.write_atomic(self.name, manifest_lines(sorted(records, key=lambda r: r["index"])).encode("utf-8"))

    def append(self, records: Iterable[dict]) -> None:
        # no fsync: a line lost to an OS crash only means its sample is made again on resume
        lines = manifest_lines(records)
        if lines:
            self.store.append(self.name, lines)
