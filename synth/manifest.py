"""The manifest: one JSON line per written sample (source image, generator, parameters, seed, files)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from .files import atomic_path

MANIFEST = "manifest.jsonl"


class Manifest:
    """Append-only JSON-lines file; a line torn by an interrupted run is dropped when it is loaded."""

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root) / MANIFEST

    def load(self) -> dict[int, dict]:
        """Records by sample index (a repeated index keeps its last record)."""
        records: dict[int, dict] = {}
        if not self.path.exists():
            return records
        with open(self.path, "rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # torn last line
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                records[int(record["index"])] = record
        return records

    def rewrite(self, records: Iterable[dict]) -> None:
        """Replace the whole file atomically (used to drop lines without data after a crash)."""
        with atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            for record in sorted(records, key=lambda r: r["index"]):
                handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def append(self, records: Iterable[dict]) -> None:
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        if not lines:
            return
        # no fsync: a line lost to an OS crash only means its sample is made again on resume
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(lines)
