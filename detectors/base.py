"""The detector interface: fit on normal images (plus synthetic anomalies), predict scores and maps,
save and load as safetensors + JSON config."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from synth.common.files import atomic_path, write_atomic
from synth.common.params import Configurable
from synth.common.saved import read_saved_config
from synth.common.threads import follow_neighbours
from synth.shots import DefectShot

from .calibration import normalize
from .registry import DETECTORS
from .sizing import STRIDE, Aspect, SizeRule, resize_mask_to, resize_to

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"



@dataclass
class Prediction:
    """Image scores (N,) and anomaly maps (N, H, W) at the detector's input shape; higher = more anomalous."""

    scores: np.ndarray
    maps: np.ndarray


@dataclass
class Anomaly:
    """A ready-made anomalous training image with its mask, e.g. from a generated dataset; where known,
    the generator that made it and ``source``, the index of the normal image (in the list given to
    ``fit``) it was made from."""

    image: np.ndarray
    mask: np.ndarray
    generator: str | None = None
    source: int | None = None


def shot_at(shot: DefectShot, shape: tuple[int, int]) -> DefectShot:
    """A real defect at a detector's input shape; a defect too small to survive nearest-neighbour
    resizing keeps every input pixel it touches."""
    mask = resize_mask_to(shot.mask > 0, shape)
    if not mask.any():
        mask = (resize_to((shot.mask > 0).astype(np.float32), shape) > 0).astype(np.uint8)
    return DefectShot(resize_to(shot.image, shape), mask, shot.defect, shot.source)


class Detector(Configurable, ABC):
    """Base class. Parameters live in ``__init__`` (no work there); ``fit`` builds and trains the model.

    Subclasses implement ``_build`` (modules from the config), ``_fit``, ``_predict_batch`` and keep
    their trained tensors in ``self.model_`` (an ``nn.Module``) plus ``self.state_`` (JSON-able), set
    by ``fit`` (scikit-learn's fitted-state convention: absent until then).

    Every image is resized to one input shape, fitted from the training images by the size rule
    (``image_size``: short side, ``aspect``: ``"auto"`` keeps the training images' aspect ratio,
    ``"square"`` squashes; ``max_side`` caps the long side); ``_fit`` and ``_predict_batch`` only
    ever see images (and masks) of that shape.
    """

    kind: ClassVar[str]
    input_stride: ClassVar[int] = STRIDE
    # what a detector can do, read by the commands, the pipeline, the export and the report instead of its kind:
    # it learns from anomalies (synthetic ones from its ``synth`` generators, or given ones); False: the
    # normal-only reference, which a run fits beside every other detector
    uses_anomalies: ClassVar[bool] = False
    # it can be written as one ONNX graph (``detectors.export``), ending in :meth:`post_process`
    exportable: ClassVar[bool] = False
    # a detector that keeps some normal images out of its own fit sets ``held_out_scores_`` (normal and
    # synthetic-anomaly image scores on them) for calibration; others are calibrated on images held out for them
    holds_out_normals: ClassVar[bool] = False
    # it learns from a few real defects given to ``fit`` (``shots``); others refuse them
    uses_shots: ClassVar[bool] = False

    def __init__(
        self,
        image_size: int = 256,
        aspect: Aspect = "auto",
        max_side: int = 1024,
        batch_size: int = 16,
        seed: int = 0,
        device: str | None = None,
    ):
        self.image_size = image_size
        self.aspect = aspect
        self.max_side = max_side
        self.size_rule  # checks the size options now rather than at fit time
        self.batch_size = batch_size
        self.seed = seed
        self.device = device

    @property
    def size_rule(self) -> SizeRule:
        return SizeRule(self.image_size, self.aspect, self.max_side, self.input_stride)

    @property
    def input_shape(self) -> tuple[int, int]:
        """(height, width) every image is resized to; fitted from the training images."""
        shape = self.state_.get("input_shape") if hasattr(self, "state_") else None
        if shape is None:
            if self.is_fitted:  # a checkpoint from before the size rule: square inputs
                return (self.image_size, self.image_size)
            raise RuntimeError(f"{type(self).__name__} is not fitted; its input shape comes from the training images")
        return int(shape[0]), int(shape[1])

    @property
    def is_fitted(self) -> bool:
        """Fitted state ends in ``_`` (scikit-learn's convention) and exists only after ``fit`` or
        ``load``: ``model_`` (the trained modules) and ``state_`` (JSON-able: the input shape, the
        calibration, what the fit chose)."""
        return hasattr(self, "model_") and bool(self.state_.get("fitted"))

    def check_is_fitted(self) -> None:
        """An error that says how to fit, for a detector that is not fitted."""
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() or load() first")

    @property
    def calibration(self) -> dict[str, Any] | None:
        """The decision threshold and score statistics set at training time (see
        :mod:`detectors.calibration`); None for a detector trained without calibration."""
        return self.state_.get("calibration") if hasattr(self, "state_") else None

    def threshold(self, override: float | None = None) -> float:
        """The decision threshold: ``override`` when given, else the calibrated one."""
        if override is not None:
            return float(override)
        if not self.calibration:
            raise ValueError(f"this {self.kind} detector has no calibrated threshold (trained without calibration); give one")
        return float(self.calibration["threshold"])

    def normalize(self, values: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Scores or maps normalised so that the threshold is 0.5 (clipped to [0, 1])."""
        cut = self.threshold(threshold)
        score_range = self.calibration["score_range"] if self.calibration else (cut - 0.5, cut + 0.5)
        return normalize(values, cut, score_range)

    def fit_record(self) -> dict[str, Any]:
        """What ``train.json`` records of the fit besides the config (a subclass adds what it chose)."""
        return {}

    def check_exportable(self) -> None:
        """An error that says why this detector cannot be written as one ONNX graph, if it cannot."""
        if not self.exportable:
            exportable = [name for name in DETECTORS.names() if DETECTORS.get(name).exportable]
            raise ValueError(f"a {self.kind} detector cannot be exported to ONNX yet; exportable: {', '.join(exportable)}")

    def reference_options(self) -> dict[str, Any]:
        """Options of the normal-only kNN reference fitted beside this detector, so that both see the
        same patch features (none: the reference's defaults)."""
        return {}

    def _torch_device(self) -> torch.device:
        if self.device:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # -- training and inference ----------------------------------------------------------------
    def fit(
        self,
        images: Sequence[np.ndarray],
        anomalies: Sequence[Anomaly] | None = None,
        progress: bool = True,
        shots: Sequence[DefectShot] | None = None,
    ) -> "Detector":
        """Train on defect-free ``images`` (and, for detectors that use them, synthetic ``anomalies``
        in addition to those drawn from the detector's own generators, and a few real defects,
        ``shots``)."""
        if len(images) == 0:
            raise ValueError("fit needs at least one normal image")
        if shots and not self.uses_shots:
            learners = [name for name in DETECTORS.names() if DETECTORS.get(name).uses_shots]
            raise ValueError(f"a {self.kind} detector does not learn from real defects (shots); {', '.join(learners)} does")
        shape = self.size_rule.shape_for([np.shape(image)[:2] for image in images])
        torch.manual_seed(self.seed)
        self.state_ = {"input_shape": list(shape)}
        self.model_ = self._build()
        images = [resize_to(np.asarray(image), shape) for image in images]
        ready = [
            Anomaly(resize_to(a.image, shape), resize_to(np.asarray(a.mask, np.float32), shape), a.generator, a.source)
            for a in anomalies or []
        ]
        if self.uses_shots:
            self._fit(images, ready, progress, shots=[shot_at(shot, shape) for shot in shots or []])
        else:
            self._fit(images, ready, progress)
        self.state_["fitted"] = True
        return self

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], progress: bool = False) -> Prediction:
        """Image scores and anomaly maps (at :attr:`input_shape`) for RGB or grey uint8 images of any size."""
        self.check_is_fitted()
        from tqdm.auto import tqdm

        device = self._torch_device()
        self.model_.to(device).eval()
        scores, maps = [], []
        starts = range(0, len(images), self.batch_size)
        for start in tqdm(starts, desc="predict", unit="batch", disable=not progress):
            follow_neighbours()
            batch = [resize_to(np.asarray(images[i]), self.input_shape) for i in range(start, min(start + self.batch_size, len(images)))]
            batch_scores, batch_maps = self._predict_batch(batch, device)
            scores.append(batch_scores.float().cpu())
            maps.append(batch_maps.float().cpu())
        if not scores:
            return Prediction(np.zeros(0, np.float32), np.zeros((0, *self.input_shape), np.float32))
        return Prediction(torch.cat(scores).numpy(), torch.cat(maps)[:, 0].numpy())

    @abstractmethod
    def _build(self) -> torch.nn.Module: ...

    @abstractmethod
    def _fit(self, images: Sequence[np.ndarray], anomalies: list[Anomaly], progress: bool) -> None: ...

    @abstractmethod
    def _predict_batch(self, images: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores (B,), maps (B, 1, H, W)) for one batch of images already at :attr:`input_shape`."""

    def _weights(self) -> dict[str, torch.Tensor]:
        """Trained tensors to save; frozen pretrained backbones are left out (rebuilt from their package)."""
        return {k: v for k, v in self.model_.state_dict().items() if not k.startswith("features.backbone.")}

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory``."""
        if not self.is_fitted:
            raise RuntimeError("only a fitted detector can be saved")
        from synth.common.version import __version__

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().cpu().contiguous() for k, v in self._weights().items()}
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(weights, str(tmp))
        config = {"detector": self.kind, "version": __version__, "config": self.get_config(), "state": self.state_}
        write_atomic(directory / CONFIG_NAME, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
        return directory

    save_pretrained = save

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> "Detector":
        """Rebuild a saved detector; on the base class, the saved kind picks the subclass. A run folder
        written by ``anomalyforge train`` (the detector in its ``model/``) is accepted too."""
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file() and (directory / "model" / CONFIG_NAME).is_file():
            directory = directory / "model"
        saved, kind, config_path = read_saved_config(directory, CONFIG_NAME, "detector", "detector")
        if kind not in DETECTORS:
            raise ValueError(f"{config_path}: unknown detector {kind!r}; known: {', '.join(DETECTORS.names())}")
        klass = DETECTORS.get(kind)
        if cls is not Detector and not issubclass(klass, cls):
            raise ValueError(f"{config_path} holds a {kind} detector, not {cls.__name__}")
        config = klass.config_from_saved(dict(saved["config"]))
        if device is not None:
            config["device"] = device
        detector = klass(**config)
        detector.state_ = saved.get("state", {})
        detector.model_ = detector._build()
        try:
            weights = load_file(str(directory / WEIGHTS_NAME))
            missing, unexpected = detector.model_.load_state_dict(weights, strict=False)
        except Exception as error:  # OSError, torch's RuntimeError, and safetensors' own error types
            raise ValueError(f"{directory / WEIGHTS_NAME}: cannot load the weights ({str(error).splitlines()[0]})") from None
        missing = [k for k in missing if not k.startswith("features.backbone.")]
        if missing or unexpected:
            raise ValueError(f"{directory / WEIGHTS_NAME}: weights do not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})")
        detector.model_.eval()
        return detector

    from_pretrained = load

    @classmethod
    def config_from_saved(cls, config: dict[str, Any]) -> dict[str, Any]:
        """A saved config as this version's constructor takes it: a subclass fills in what detectors
        saved by earlier versions lack, where the new default would build a different model."""
        return config


def load_detector(directory: str | Path, device: str | None = None) -> Detector:
    """Load any saved detector."""
    return Detector.load(directory, device=device)


def detector_class(kind: str) -> type[Detector]:
    """The detector class registered as ``kind``."""
    return DETECTORS.get(kind)
