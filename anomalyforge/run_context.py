"""What every step of a recipe run sees: the resolved recipe, the run folder and its step manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass
class RunContext:
    recipe: dict[str, Any]
    root: Path
    manifest: dict[str, Any]
    progress: bool = True
    echo: Callable[[str], None] = print

    def outputs(self, step: str) -> dict[str, Any]:
        """What an earlier step of this run folder produced ({} when it is off)."""
        entry = self.manifest["steps"].get(step, {})
        return entry.get("outputs", {}) if entry.get("status") == "done" else {}

    @property
    def seed(self) -> int:
        return self.recipe["seed"]

    @property
    def train_dir(self) -> Path:
        return Path(self.outputs("normals")["train"])

    @property
    def test_dir(self) -> str | None:
        """The real test split: the recipe's, or the one the normals step laid out for demo data."""
        return self.recipe["data"]["test"] or self.outputs("normals").get("test")

    @property
    def anomalies_dir(self) -> Path:
        return Path((self.outputs("curate") or self.outputs("generate"))["dataset"])
