"""A detector run folder: the trained detector (``model/``), the normal-only kNN reference
(``reference/``) and ``train.json``, as ``anomalyforge train`` and recipes write them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from synth.common.files import write_atomic
from synth.common.storage import check_output_folder
from synth.presets import preset_options, resolve_preset
from synth.shots import DefectShot

from .base import Detector, detector_class
from .calibration import DEFAULT_TARGET_FPR, calibrate, check_target_fpr, held_out_split
from .data import load_generated_anomalies, load_normals
from .synthetic import DEFAULT_SYNTH, make_generator, synthesise


def train_detector(
    kind: str,
    normals_dir: str | Path,
    out: str | Path,
    anomalies_dir: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    synth: str | None = None,
    preset: str = "auto",
    textures: str | None = None,
    reference: bool = True,
    progress: bool = True,
    target_fpr: float = DEFAULT_TARGET_FPR,
    shots: Sequence[DefectShot] | None = None,
) -> dict[str, Any] | None:
    """``anomalyforge train`` and a recipe's train step: build the ``kind`` detector from ``options``
    and train it into the run folder ``out`` (see :func:`train_run`). A detector that learns from
    anomalies draws them from ``synth`` (default: none when ``anomalies_dir`` gives them, else the
    default mix) placed by ``preset`` (``auto``: guessed from the normal images), and one that
    learns from real defects gets ``shots``."""
    klass = detector_class(kind)
    if anomalies_dir and not klass.uses_anomalies:
        raise ValueError(f"the {kind} detector trains on normal images only; drop --anomalies")
    options = dict(options or {})
    if klass.uses_anomalies:
        options.setdefault("synth", synth if synth is not None else ("none" if anomalies_dir else DEFAULT_SYNTH))
        options.setdefault("synth_options", preset_options(resolve_preset(preset, normals_dir), textures))
    return train_run(klass(**options), normals_dir, out, anomalies_dir, reference=reference, progress=progress,
                     target_fpr=target_fpr, shots=shots)


def train_run(
    detector: Detector,
    normals_dir: str | Path,
    out: str | Path,
    anomalies_dir: str | Path | None = None,
    reference: bool = True,
    progress: bool = True,
    target_fpr: float = DEFAULT_TARGET_FPR,
    calibration_share: float = 0.1,
    shots: Sequence[DefectShot] | None = None,
) -> dict[str, Any] | None:
    """Fit ``detector`` on the normal images (plus the anomalies of a generated dataset), calibrate its
    decision threshold on held-out normals and synthetic anomalies made on them (the hybrid holds
    out its own; other detectors are fitted without ``calibration_share`` of the images), fit the kNN
    reference on the same normals, and save both into ``out``; returns what ``train.json`` holds (None
    in the non-main processes of an ``accelerate launch``, which write nothing)."""
    from accelerate import PartialState

    check_target_fpr(target_fpr)  # before the training, not after it
    check_output_folder(out, "train.json", "detector run")  # before the training, not after it
    normals = load_normals(normals_dir, detector.size_rule)
    own_hold_out = detector.holds_out_normals
    fit_index, held_index = (np.arange(len(normals.images)), []) if own_hold_out else held_out_split(
        len(normals.images), calibration_share, detector.seed)
    fit_images = [normals.images[i] for i in fit_index]
    fit_paths = [normals.paths[i] for i in fit_index]
    anomalies = load_generated_anomalies(anomalies_dir, normals.shape, normal_paths=fit_paths) if anomalies_dir else []
    out = Path(out)
    start = time.perf_counter()
    detector.fit(fit_images, anomalies, progress=progress, shots=shots)
    train_s = time.perf_counter() - start
    if not PartialState().is_main_process:
        return None
    if own_hold_out:
        normal_scores, anomaly_scores = detector.held_out_scores_
    elif len(held_index):
        normal_scores, anomaly_scores = held_out_scores(detector, [normals.images[i] for i in held_index])
    else:
        normal_scores = anomaly_scores = None
    if normal_scores is not None:
        detector.state_["calibration"] = calibrate(normal_scores, anomaly_scores, target_fpr)
        detector.state_["calibration"]["held_out_images"] = (
            "the hybrid's own held-out normals" if own_hold_out else [str(normals.paths[i]) for i in held_index])
    out.mkdir(parents=True, exist_ok=True)
    detector.save(out / "model")
    info: dict[str, Any] = {
        "detector": detector.kind, "data": str(normals_dir), "anomalies": str(anomalies_dir) if anomalies_dir else None,
        "n_normal": len(normals.images), "n_ready_anomalies": len(anomalies), "n_shots": len(shots or []),
        "train_seconds": round(train_s, 1),
        "input_shape": list(detector.input_shape), "skipped_files": normals.skipped, "config": detector.get_config(),
    }
    info.update(detector.fit_record())
    info["calibration"] = detector.calibration
    if reference and detector.uses_anomalies:
        knn = detector_class("knn")(  # the same features as the detector: its backbone, stages and tiling where it has them
            image_size=detector.image_size, aspect=detector.aspect, max_side=detector.max_side, seed=detector.seed, device=detector.device,
            **detector.reference_options(),
        )
        if progress:
            from tqdm.auto import tqdm

            tqdm.write(f"{detector.kind} trained in {train_s:.0f} s; now fitting the normal-only kNN reference "
                       "(the baseline evaluate compares with; --no-reference skips it)")
        start = time.perf_counter()
        knn.fit(normals.images, progress=progress)
        info["reference_train_seconds"] = round(time.perf_counter() - start, 1)
        knn.save(out / "reference")
        info["reference"] = "reference"
    write_atomic(out / "train.json", (json.dumps(info, indent=2, default=str) + "\n").encode())
    return info


def held_out_scores(detector: Detector, images: list[np.ndarray], per_image: int = 2, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Image scores of held-out normal images and of synthetic anomalies made on them (with the
    detector's own generators, or the default mix for a detector that has none)."""
    if detector.uses_anomalies:
        generator = detector.calibration_generator(images)
    else:
        generator = make_generator(DEFAULT_SYNTH, None, images)
    anomalies = synthesise(images, generator, per_image * len(images), detector.seed + 1, progress)
    normal = detector.predict(images).scores
    anomalous = detector.predict([a.image for a in anomalies]).scores if anomalies else np.zeros(0, np.float32)
    return normal, anomalous
