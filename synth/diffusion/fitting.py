"""Fitting a diffusion backend to a few real defects: ``anomalyforge fit-defects`` and a recipe's
fit_defects step, one function for both."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..common.pictures import save_png, shots_sheet
from ..common.readers import ImageFiles, TestImage, normal_image_paths
from ..presets import AUTO, preset_options, resolve_preset
from ..registry import BACKENDS
from .generator import DefectDiffusion, example_defects
from ..shots import DefectShot, split_shots


@dataclass
class FittedDefects:
    """A fitted defect generator, saved, with the shots it learned from."""

    generator: DefectDiffusion
    out: Path
    shots: list[DefectShot]
    held_out: list[TestImage]  # the category's test images that were not drawn as shots
    skipped: dict[str, str] = field(default_factory=dict)  # unreadable files, by path
    preview: Path | None = None


def fit_defects(
    data: str | Path,
    out: str | Path,
    backend: str = "scratch",
    shots: int = 3,
    defects: Sequence[str] | None = None,
    normals: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    preset: str = AUTO,
    seed: int = 0,
    preview: int = 3,
    progress: bool = True,
) -> FittedDefects | None:
    """Draw ``shots`` real defects of each type from the MVTec-layout folder ``data`` (seeded), fit
    the ``backend`` on them and the normal images (``normals``, default ``data``'s train/good) with
    ``options`` over the preset's (``auto``: guessed from the normal images), save it to ``out`` with
    a ``preview`` sheet of ``preview`` generated defects per type. An interrupted fit resumes from
    ``out/checkpoint``. Under ``accelerate launch`` only the main process saves and gets the result
    (the others get None)."""
    from accelerate import PartialState

    drawn, held_out, skipped = split_shots(data, shots, seed=seed, defects=defects)
    normal_images = ImageFiles(normal_image_paths(normals or data))
    settings = {"seed": seed, **(options or {})}
    for name, value in preset_options(resolve_preset(preset, normals or data))["diffusion"].items():
        settings.setdefault(name, value)
    try:
        generator = BACKENDS.get(backend)(**settings)
    except TypeError as error:
        raise ValueError(f"bad option for the {backend} backend: {error}") from None
    out = Path(out)
    generator.fit(drawn, normal_images, progress=progress, checkpoint_dir=out / "checkpoint")
    if not PartialState().is_main_process:
        return None
    generator.save_pretrained(out)
    sheet = None
    if preview:
        sheet = save_png(out / "preview.png", shots_sheet(drawn, example_defects(generator, normal_images, preview), preview))
    return FittedDefects(generator, out, drawn, held_out, skipped, sheet)
