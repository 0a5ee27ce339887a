"""The few real defects a diffusion generator learns from."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .common.readers import (
    ImageReadError,
    TestImage,
    mvtec_test_images,
    read_image,
    read_mask,
)

log = logging.getLogger(__name__)


@dataclass
class DefectShot:
    """One real defect: its RGB image, its mask (HxW, non-zero = defect), its type's name and the
    file it came from."""

    image: np.ndarray
    mask: np.ndarray
    defect: str = "defect"
    source: str = ""

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"shot image must be HxWx3 uint8, got {self.image.dtype} {self.image.shape}")
        if self.mask.shape[:2] != self.image.shape[:2]:
            raise ValueError(f"shot mask {self.mask.shape[:2]} does not match its image {self.image.shape[:2]}")
        if not np.any(self.mask > 0):
            raise ValueError(f"shot of {self.defect!r} has an empty mask")
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", self.defect):
            raise ValueError(f"defect name {self.defect!r} must be letters, digits, '_' or '-'")


def defect_types(shots: Sequence[DefectShot]) -> list[str]:
    """The defect types of the shots, in first-seen order."""
    return list(dict.fromkeys(shot.defect for shot in shots))


def split_shots(
    category: str | Path, shots_per_defect: int = 3, seed: int = 0, defects: Sequence[str] | None = None
) -> tuple[list[DefectShot], list[TestImage], dict[str, str]]:
    """From an MVTec-layout category, draw ``shots_per_defect`` real defects of each type as shots.

    Returns the shots, the test images left over (all good ones and the defects not drawn, for
    held-out evaluation) and the unreadable files skipped, by path, with the reason; an error when
    no shot could be read.
    """
    images = mvtec_test_images(category)
    by_type: dict[str, list[TestImage]] = {}
    for item in images:
        if item.defect != "good":
            by_type.setdefault(item.defect, []).append(item)
    chosen_types = list(defects) if defects else sorted(by_type)
    missing = [d for d in chosen_types if d not in by_type]
    if missing:
        raise ValueError(f"{category}: no test images of defect type(s) {missing}; found {sorted(by_type)}")
    rng = np.random.default_rng(seed)
    shots: list[DefectShot] = []
    taken: set[Path] = set()
    bad: dict[str, str] = {}
    for defect in chosen_types:
        candidates = by_type[defect]
        for index in rng.permutation(len(candidates)):
            if sum(shot.defect == defect for shot in shots) == shots_per_defect:
                break
            item = candidates[int(index)]
            try:
                image = read_image(item.path)
                mask = read_mask(item.mask_path, image.shape[:2])
                shots.append(DefectShot(image, mask, defect, str(item.path)))
            except (ImageReadError, ValueError) as error:
                bad[str(item.path)] = str(error)
                log.warning("skipping shot %s: %s", item.path, error)
            taken.add(item.path)
    if not shots:
        raise ValueError(f"{category}: no readable defect shots ({len(bad)} unreadable)")
    held_out = [item for item in images if item.path not in taken]
    return shots, held_out, bad


def shot_halves(shots: Sequence[DefectShot]) -> list[list[DefectShot]]:
    """The shots dealt into two halves, type after type and in turn across types, so that each half
    holds about half of every type's shots (with one shot per type, about half of the types); one
    half (all of them) when there are fewer than two. A model that learns from one half can be
    checked on the other's real defects."""
    ordered = [shot for defect in defect_types(shots) for shot in shots if shot.defect == defect]
    if len(ordered) < 2:
        return [ordered] if ordered else []
    return [ordered[0::2], ordered[1::2]]
