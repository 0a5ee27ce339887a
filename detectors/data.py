"""Loading normal training images, ready-made anomalies and MVTec-layout test sets at a detector's size."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Sequence

import numpy as np

from synth.base import MIN_SIDE, ImageTooSmallError, check_image
from synth.common.readers import (
    ImageReadError,
    mvtec_test_images,
    normal_image_paths,
    read_image,
    read_mask,
)
from synth.dataset.layout import RUN_INFO, generated_input_folder
from synth.dataset.reader import read_generated

from .base import Anomaly
from .sizing import SizeRule, image_shapes, resize_mask_to, resize_to

log = logging.getLogger(__name__)


@dataclass
class ImageSet:
    """Images resized to one shape, with the files they came from and the files that could not be read."""

    images: list[np.ndarray]
    paths: list[Path]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.images[0].shape[:2]


def load_normals(folder: str | Path, rule: SizeRule | tuple[int, int], limit: int | None = None) -> ImageSet:
    """Defect-free images of a folder (``train/good`` of an MVTec category), resized to the shape the
    size ``rule`` gives for them (or to a given (height, width)); unreadable files are skipped with a
    warning that names them."""
    paths = normal_image_paths(folder)[:limit]
    if isinstance(rule, SizeRule):
        usable = [s for s in image_shapes(paths) if min(s) >= MIN_SIDE]
        shape = rule.shape_for(usable or [(1, 1)])
    else:
        shape = tuple(rule)
    images, kept, skipped = [], [], {}
    for path in paths:
        try:
            images.append(resize_to(check_image(read_image(path)), shape))
            kept.append(path)
        except ImageReadError as error:
            log.warning("skipping %s", error)
            skipped[str(path)] = str(error)
        except ImageTooSmallError as error:  # readable, but nothing can be learned from a few pixels
            log.warning("skipping %s: %s", path, error)
            skipped[str(path)] = f"{path}: {error}"
    if not images:
        reasons = "; ".join(list(skipped.values())[:3]) + (" ..." if len(skipped) > 3 else "")
        raise ValueError(f"no usable normal images in {folder}: {len(skipped)} skipped ({reasons})")
    return ImageSet(images, kept, skipped)


@dataclass
class TestSet:
    """An MVTec-layout test split: images and binary masks at one shape, labels and defect types.
    ``has_mask`` is False for a defect image without a mask (its mask is empty and unused)."""

    __test__ = False  # not a pytest test class

    images: list[np.ndarray]
    masks: list[np.ndarray]
    labels: np.ndarray
    defects: list[str]
    paths: list[Path]
    skipped: dict[str, str] = field(default_factory=dict)
    has_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.has_mask is None:
            self.has_mask = np.ones(len(self.images), bool)


def load_test_set(
    folder: str | Path, shape: tuple[int, int], exclude: Collection[str | Path] = (), require_masks: bool = True
) -> TestSet:
    """``test/<defect>/`` images with ``ground_truth`` masks; unreadable files are skipped and listed.
    Files in ``exclude`` (e.g. the real defects a few-shot generator learned from) are left out.
    Without ``require_masks``, defect images may come without masks (image labels only)."""
    images, masks, labels, defects, paths, has_mask, skipped = [], [], [], [], [], [], {}
    left_out = {Path(p).resolve() for p in exclude}
    for item in mvtec_test_images(folder, require_masks):
        if left_out and Path(item.path).resolve() in left_out:
            continue
        try:
            image = read_image(item.path)
            mask = read_mask(item.mask_path, image.shape[:2]) if item.mask_path else np.zeros(image.shape[:2], np.float32)
        except ImageReadError as error:
            log.warning("skipping %s", error)
            skipped[str(item.path)] = str(error)
            continue
        images.append(resize_to(image, shape))
        masks.append(resize_mask_to(mask, shape))
        labels.append(item.label)
        defects.append(item.defect)
        paths.append(item.path)
        has_mask.append(item.label == 0 or item.mask_path is not None)
    if not images:
        raise ValueError(f"no readable test images in {folder}")
    return TestSet(images, masks, np.array(labels), defects, paths, skipped, np.array(has_mask, bool))


def load_generated_anomalies(
    folder: str | Path,
    shape: tuple[int, int],
    limit: int | None = None,
    normal_paths: Sequence[str | Path] = (),
) -> list[Anomaly]:
    """The anomalous samples of a dataset written by ``anomalyforge generate`` (either format), with
    their generator; ``source`` is the sample's source image's index in ``normal_paths`` when it is
    one of them (a detector then never compares the sample with its own source image)."""
    input_root = Path(generated_input_folder(folder)) if (Path(folder) / RUN_INFO).is_file() else Path(folder)
    index_of = {Path(p).resolve(): i for i, p in enumerate(normal_paths)}
    anomalies = []
    for sample in read_generated(folder):
        if sample.record.get("label", 1) == 0 or sample.mask.max() <= 0:
            continue
        source = sample.record.get("source")
        anomalies.append(Anomaly(
            resize_to(sample.image, shape), resize_to(np.asarray(sample.mask, np.float32), shape),
            generator=sample.record.get("generator"),
            source=index_of.get((input_root / source).resolve()) if source else None,
        ))
        if limit is not None and len(anomalies) >= limit:
            break
    if not anomalies:
        raise ValueError(f"{folder}: the generated dataset holds no anomalous samples")
    return anomalies
