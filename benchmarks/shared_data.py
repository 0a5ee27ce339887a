"""Where the benchmarks find their data: the project, and the real defect datasets beside it
(``../shared/data``: MVTec-layout categories and a texture folder)."""

from __future__ import annotations

from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared" / "data"
BRODATZ = SHARED / "textures" / "brodatz"  # texture photos: DRAEM's anomaly source, the curation benchmark's noise


def categories(folder: Path = SHARED) -> list[Path]:
    """The MVTec-layout categories in ``folder`` (those with ``train/good`` and ``test``), by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if (p / "train" / "good").is_dir() and (p / "test").is_dir())


def category_names(folder: Path = SHARED) -> str:
    """The categories in ``folder`` as a comma-separated list (a default for ``--categories``)."""
    return ",".join(p.name for p in categories(folder))
