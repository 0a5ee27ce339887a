"""Few-shot diffusion defects: learn a defect type from a few real examples, then paint it into
normal images at new places and in new shapes (after AnomalyDiffusion, AnoGen, SeaS)."""

from __future__ import annotations

import json
import time
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..base import AnomalyGenerator, to_jsonable
from ..common.saved import check_mixed_precision, read_saved_config, resolve_mixed_precision
from ..defect_masks import MASK_MODES, DefectMaskSampler
from ..registry import BACKENDS
from .crops import crop, defect_window, paste
from ..shots import DefectShot, defect_types
from .training_windows import TrainingWindows, crop_mask

CONFIG_NAME = "generator.json"
MASKS_NAME = "masks.safetensors"



class DefectDiffusion(AnomalyGenerator):
    """Base of the diffusion backends. ``fit(shots, normals)`` learns the shots' defect types; a call
    then draws a new mask for the image (see :class:`~synth.DefectMaskSampler`), cuts a window
    around it, paints the masked part at the model's ``resolution`` and pastes it back at full
    resolution: pixels outside the mask are unchanged.

    Args:
        resolution: side of the windows the model paints.
        context: window size around a defect, in multiples of the defect's size.
        min_window: smallest window side, in image pixels.
        mask_modes: how new masks are made: ``affine``, ``elastic``, ``perlin`` (see
            :class:`~synth.DefectMaskSampler`).
        mask_scale: size factor range for new masks, relative to the real ones.
        mask_relative_size: also scale new masks by the image's size relative to the shot's
            (see :class:`~synth.DefectMaskSampler`).
        background, background_threshold: keep new masks on the object (``"border"`` or a colour).
        defect: the defect type to paint; ``None`` draws one of the learned types per sample.
        num_inference_steps, guidance_scale: sampling settings.
        train_steps, batch_size, learning_rate: training settings.
        seed: seed of the training (weights, batches, noise).
        device: ``"cpu"``, ``"cuda"``, ... ; ``None``: what ``accelerate`` picks.
        mixed_precision: ``"no"`` (or ``False``), ``"fp16"`` or ``"bf16"`` for training; ``"auto"``: bfloat16 where
            the device computes it natively (see :func:`~synth.common.saved.native_mixed_precision`),
            which makes the default fit about a third faster on such a CPU.
        checkpoint_every: steps between checkpoints when ``fit`` is given a ``checkpoint_dir``.
    """

    name = "diffusion"
    kind: ClassVar[str] = ""

    def __init__(
        self,
        resolution: int = 64,
        context: float = 1.0,
        min_window: int = 32,
        mask_modes: Sequence[str] = MASK_MODES,
        mask_scale: tuple[float, float] = (0.7, 1.4),
        mask_relative_size: bool = False,
        background: str | float | tuple[float, ...] | None = None,
        background_threshold: float = 20.0,
        defect: str | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 1.0,
        train_steps: int = 2000,
        batch_size: int = 8,
        learning_rate: float = 2e-4,
        seed: int = 0,
        device: str | None = None,
        mixed_precision: str | bool = "auto",
        checkpoint_every: int = 250,
        p_unchanged: float = 0.0,
    ) -> None:
        super().__init__(p_unchanged)
        self.resolution = resolution
        self.context = context
        self.min_window = min_window
        self.mask_modes = tuple(mask_modes)
        self.mask_scale = tuple(mask_scale)
        self.mask_relative_size = mask_relative_size
        self.background = background
        self.background_threshold = background_threshold
        self.defect = defect
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.train_steps = train_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.seed = seed
        self.device = device
        self.mixed_precision = check_mixed_precision(mixed_precision)
        self.checkpoint_every = checkpoint_every
        self._defects: list[str] = []
        self._masks: dict[str, list[np.ndarray]] = {}
        self._state: dict[str, Any] = {}
        self._pipeline = None  # the backend's diffusers pipeline, once fitted or loaded

    # -- fitting ------------------------------------------------------------------------------
    @property
    def defects(self) -> list[str]:
        """The learned defect types."""
        return list(self._defects)

    @property
    def is_fitted(self) -> bool:
        return bool(self._state.get("fitted"))

    @property
    def fit_summary(self) -> dict[str, Any]:
        """What fitting recorded: ``shots`` per defect type, ``train_seconds``, ``mixed_precision``
        (the precision it trained in), ``final_loss`` ({} before fit)."""
        return {k: self._state[k] for k in ("shots", "train_seconds", "mixed_precision", "final_loss") if k in self._state}

    def fit(
        self,
        shots: Sequence[DefectShot],
        normals: Sequence[np.ndarray] = (),
        progress: bool = True,
        checkpoint_dir: str | Path | None = None,
    ) -> "DefectDiffusion":
        """Learn the defect types of ``shots`` (a few real defects with masks), with ``normals``
        (defect-free images) for the normal class. With ``checkpoint_dir``, training state is
        saved there every ``checkpoint_every`` steps and an interrupted fit resumes from it."""
        shots = list(shots)
        if not shots:
            raise ValueError("fit needs at least one defect shot (a real defect image with its mask)")
        self._defects = defect_types(shots)
        self._masks = {d: [(s.mask > 0).astype(np.uint8) for s in shots if s.defect == d] for d in self._defects}
        if self.defect is not None and self.defect not in self._defects:
            raise ValueError(f"defect {self.defect!r} is not among the shots' types {self._defects}")
        windows = TrainingWindows(shots, normals, self.resolution, self.context, self.min_window, **self._window_options())
        precision = resolve_mixed_precision(self.mixed_precision, self.device)
        started = time.perf_counter()
        history = self._train(windows, precision, progress, checkpoint_dir)
        self._state = {
            "fitted": True,
            "defects": self._defects,
            "shots": {d: len(m) for d, m in self._masks.items()},
            "shot_files": [shot.source for shot in shots if shot.source],
            "train_seconds": round(time.perf_counter() - started, 1),
            "mixed_precision": precision,
            "final_loss": float(np.mean(history[-50:])) if history else None,
            "loss_history": [round(x, 5) for x in history],
        }
        return self

    def _window_options(self) -> dict[str, Any]:
        return {}

    def fingerprint(self) -> dict[str, Any]:
        """The settings a training checkpoint must share to be resumed."""
        return to_jsonable({"kind": self.kind, "defects": self._defects, **self._model_config()})

    # -- generation ---------------------------------------------------------------------------
    def mask_sampler(self, defect: str) -> DefectMaskSampler:
        """New-mask sampler for one learned defect type."""
        return DefectMaskSampler(
            self._masks[defect], self.mask_modes, self.mask_scale, self.mask_relative_size,
            background=self.background, background_threshold=self.background_threshold,
        )

    def generate_rgb(self, image: np.ndarray, rng: np.random.Generator):
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() or from_pretrained() first")
        defect = self.defect or self._defects[int(rng.integers(len(self._defects)))]
        mask, mask_params = self.mask_sampler(defect)(image, rng)
        window = defect_window(mask, self.context, self.min_window)
        seed = int(rng.integers(2**63))
        picture = crop(image, window, self.resolution)
        hole = crop_mask(mask, window, self.resolution)
        if not hole.any():  # a hairline in a large window: paint every model pixel it touches
            hole = crop(mask.astype(np.float32), window, self.resolution) > 0
        painted = self.paint(picture[None], hole[None], [defect], [seed])[0]
        out = paste(image, painted, mask, window)
        params = {"defect": defect, "mask": mask_params, "window": list(window), "seed": seed}
        return out, mask.astype(np.float32), 1, params

    @torch.no_grad()
    def paint(
        self, windows: np.ndarray, holes: np.ndarray, defects: Sequence[str], seeds: Sequence[int]
    ) -> np.ndarray:
        """Paint ``defects`` into the holes (BxSxS bool) of the windows (BxSxSx3 uint8); returns
        BxSxSx3 uint8. Sample ``i`` depends only on its inputs and ``seeds[i]``."""
        pipeline = self._pipeline.to(self._device())
        pipeline.set_progress_bar_config(disable=True)
        return np.stack([
            self._paint_one(pipeline, window, hole, defect, torch.Generator().manual_seed(int(seed)))
            for window, hole, defect, seed in zip(windows, holes, defects, seeds)
        ])

    @abstractmethod
    def _paint_one(
        self, pipeline, window: np.ndarray, hole: np.ndarray, defect: str, generator: torch.Generator
    ) -> np.ndarray:
        """One window (SxSx3 uint8) painted by the backend's ``pipeline`` with noise from ``generator``."""

    @abstractmethod
    def _train(self, windows: TrainingWindows, precision: str, progress: bool, checkpoint_dir: str | Path | None) -> list[float]:
        """Build and train the model in ``precision`` (``mixed_precision`` resolved); returns the loss per step."""

    def _model_config(self) -> dict[str, Any]:
        return {"resolution": self.resolution}

    def _device(self) -> torch.device:
        if self.device:
            return torch.device(self.device)
        from accelerate import PartialState

        return PartialState().device

    # -- persistence --------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``generator.json``, the real masks (``masks.safetensors``) and the model's weights."""
        if not self.is_fitted:
            raise RuntimeError("only a fitted generator can be saved")
        from ..common.version import __version__

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        masks = {f"{d}.{i}": torch.from_numpy(m) for d, ms in self._masks.items() for i, m in enumerate(ms)}
        save_file(masks, str(directory / MASKS_NAME))
        self._save_model(directory)
        config = {"backend": self.kind, "version": __version__, "config": self.get_config(), "state": self._state}
        (directory / CONFIG_NAME).write_text(json.dumps(to_jsonable(config), indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides: Any) -> "DefectDiffusion":
        """Load a saved generator; on the base class the saved backend picks the class.
        ``overrides`` replace constructor settings (e.g. ``defect``, ``num_inference_steps``)."""
        directory = Path(directory)
        saved, kind, path = read_saved_config(directory, CONFIG_NAME, "backend", "diffusion generator")
        klass = BACKENDS.get(kind) if kind in BACKENDS else None
        if klass is None or (cls is not DefectDiffusion and klass is not cls):
            raise ValueError(f"{path}: backend {kind!r} cannot be loaded by {cls.__name__} (known: {', '.join(BACKENDS.names())})")
        generator = klass(**(dict(saved["config"]) | overrides))  # constructors turn JSON lists back into tuples
        generator._state = saved.get("state", {})
        generator._defects = list(generator._state.get("defects", []))
        try:
            masks = load_file(str(directory / MASKS_NAME))
        except Exception as error:
            raise ValueError(f"{directory / MASKS_NAME}: cannot read the defect masks ({str(error).splitlines()[0]})") from None
        generator._masks = {
            d: [masks[f"{d}.{i}"].numpy() for i in range(generator._state["shots"][d])] for d in generator._defects
        }
        if generator.defect is not None and generator.defect not in generator._defects:
            raise ValueError(f"defect {generator.defect!r} is not among the learned types {generator._defects}")
        generator._load_model(directory)
        return generator

    @abstractmethod
    def _save_model(self, directory: Path) -> None: ...

    @abstractmethod
    def _load_model(self, directory: Path) -> None: ...


def load_defect_diffusion(directory: str | Path, **overrides: Any) -> DefectDiffusion:
    """Load any saved diffusion generator."""
    return DefectDiffusion.from_pretrained(directory, **overrides)


def example_defects(generator: DefectDiffusion, normals: Sequence[np.ndarray], per_defect: int) -> list:
    """``per_defect`` samples of every learned type, painted on the normals in turn (for preview
    sheets); sample ``k`` is seeded by ``(generator.seed, k)``."""
    import copy

    samples = []
    for defect in generator.defects:
        painter = copy.copy(generator)  # shares the model; paints only this defect type
        painter.defect = defect
        for _ in range(per_defect):
            index = len(samples)
            samples.append(painter(normals[index % len(normals)], np.random.default_rng([painter.seed, index])))
    return samples
