"""The from-scratch backend: a small mask-conditioned U-Net trained on the defects' windows, for
CPUs and for users without pretrained weights."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from ..common.saved import make_accelerator
from .generator import DefectDiffusion
from .pipeline import MaskedDefectPipeline, unet_input
from .trainer import TrainingRun, train
from .training_windows import TrainingWindows, to_tensor, to_uint8

PIPELINE_DIR = "pipeline"


def build_unet(resolution: int, n_classes: int, block_out_channels: Sequence[int], layers_per_block: int) -> UNet2DModel:
    """The mask-conditioned U-Net: 7 channels in (noisy image, masked image, mask), 3 out, one
    class embedding per defect type plus the normal class."""
    levels = len(block_out_channels)
    return UNet2DModel(
        sample_size=resolution,
        in_channels=7,
        out_channels=3,
        layers_per_block=layers_per_block,
        block_out_channels=tuple(block_out_channels),
        down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels,
        num_class_embeds=n_classes,
        norm_num_groups=math.gcd(*block_out_channels, 32),
    )


class ScratchDefectDiffusion(DefectDiffusion):
    """Few-shot defects from a U-Net trained from scratch (see :class:`DefectDiffusion` for the
    shared arguments).

    The model learns windows around the real defects (class = the defect type) and windows of
    normal images with defect-shaped holes (class 0, normal surface), heavily augmented. It
    predicts ``prediction_type`` (``"v_prediction"`` or ``"sample"`` fill holes after a few
    hundred steps; ``"epsilon"`` needs far more), with the loss weighted ``mask_weight`` times
    inside the hole; weights are averaged (EMA) for sampling; DDIM samples.

    Args:
        block_out_channels, layers_per_block: U-Net size.
        prediction_type: the diffusion target.
        mask_weight: loss weight inside the hole relative to outside.
        normal_fraction: share of normal windows in training batches.
        flip: turn and mirror the training windows (off for images with a fixed orientation).
        ema_decay: decay of the weight average used for sampling (0: no average).
        guidance_scale: classifier-free guidance of the defect class against the normal class;
            3 paints clearer defects than 1 (no guidance) on magnetic tiles, at 1.5x the time.
    """

    kind = "scratch"

    def __init__(
        self,
        block_out_channels: Sequence[int] = (32, 32, 64, 128),
        layers_per_block: int = 1,
        prediction_type: str = "v_prediction",
        mask_weight: float = 5.0,
        normal_fraction: float = 0.3,
        flip: bool = True,
        ema_decay: float = 0.999,
        guidance_scale: float = 3.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(guidance_scale=guidance_scale, **kwargs)
        if prediction_type not in ("v_prediction", "sample", "epsilon"):
            raise ValueError(f"prediction_type must be v_prediction, sample or epsilon, got {prediction_type!r}")
        self.block_out_channels = tuple(block_out_channels)
        self.layers_per_block = layers_per_block
        self.prediction_type = prediction_type
        self.mask_weight = mask_weight
        self.normal_fraction = normal_fraction
        self.flip = flip
        self.ema_decay = ema_decay

    def _model_config(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution, "block_out_channels": self.block_out_channels,
            "layers_per_block": self.layers_per_block, "prediction_type": self.prediction_type,
        }

    def _window_options(self) -> dict[str, Any]:
        return {"normal_fraction": self.normal_fraction, "flip": self.flip}

    def _train(self, windows: TrainingWindows, precision: str, progress: bool, checkpoint_dir: str | Path | None) -> list[float]:
        from diffusers.training_utils import EMAModel

        torch.manual_seed(self.seed)
        unet = build_unet(self.resolution, 1 + len(self._defects), self.block_out_channels, self.layers_per_block)
        noise_scheduler = DDPMScheduler(
            num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=self.prediction_type
        )
        accelerator = make_accelerator(self.device, precision)
        parameters = list(unet.parameters())
        optimizer = torch.optim.AdamW(parameters, lr=self.learning_rate, weight_decay=1e-4)
        ema = EMAModel(parameters, decay=self.ema_decay) if self.ema_decay > 0 else None

        def loss(modules, batch, generator):
            (model,) = modules
            image, mask = batch["image"], batch["mask"]
            noise = torch.randn(image.shape, generator=generator).to(image.device)
            t = torch.randint(0, 1000, (len(image),), generator=generator).to(image.device)
            noisy = noise_scheduler.add_noise(image, noise, t)
            output = model(unet_input(noisy, image, mask), t, class_labels=batch["label"]).sample
            if self.prediction_type == "v_prediction":
                target = noise_scheduler.get_velocity(image, noise, t)
            elif self.prediction_type == "sample":
                target = image
            else:
                target = noise
            weight = 1.0 + (self.mask_weight - 1.0) * mask
            return (weight * (output.float() - target) ** 2).mean() / weight.mean()

        def trained() -> dict[str, torch.Tensor]:
            tensors = {f"unet.{k}": v for k, v in accelerator.unwrap_model(unet).state_dict().items()}
            if ema is not None:
                tensors |= {f"ema.{i}": p for i, p in enumerate(ema.shadow_params)}
            return tensors

        def restore(tensors: dict[str, torch.Tensor]) -> None:
            accelerator.unwrap_model(unet).load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("unet.")})
            if ema is not None:
                for i, p in enumerate(ema.shadow_params):
                    p.data.copy_(tensors[f"ema.{i}"])

        def after_step(step: int) -> None:
            if ema is not None:
                ema.optimization_step = step - 1
                ema.step(parameters)

        run = TrainingRun(
            [unet], optimizer, lambda rng: windows.batch(rng, self.batch_size), loss, trained, restore, after_step,
            parameters,
        )
        history = train(
            run, accelerator, self.train_steps, self.seed, warmup=min(100, self.train_steps // 10),
            checkpoint_dir=checkpoint_dir, checkpoint_every=self.checkpoint_every,
            fingerprint=self.fingerprint(), progress=progress, desc="diffusion (scratch)",
            precision=precision,
        )
        unet = accelerator.unwrap_model(unet)
        if ema is not None:
            ema.copy_to(unet.parameters())
        sampler = DDIMScheduler.from_config(noise_scheduler.config, timestep_spacing="trailing")
        self._pipeline = MaskedDefectPipeline(unet.eval(), sampler)
        return history

    def _paint_one(self, pipeline, window, hole, defect, generator) -> np.ndarray:
        painted = pipeline(
            to_tensor(window[None]),
            torch.from_numpy(hole[None, None].astype(np.float32)),
            torch.tensor([1 + self._defects.index(defect)]),
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            generator=generator,
        )
        return to_uint8(painted)[0]

    def _save_model(self, directory: Path) -> None:
        self._pipeline.save_pretrained(directory / PIPELINE_DIR)

    def _load_model(self, directory: Path) -> None:
        from diffusers.utils import logging as diffusers_logging

        shown = diffusers_logging.is_progress_bar_enabled()
        diffusers_logging.disable_progress_bar()  # two small parts, loaded at once: a bar would only clutter --quiet runs
        try:
            self._pipeline = MaskedDefectPipeline.from_pretrained(directory / PIPELINE_DIR)
        except (OSError, ValueError, EnvironmentError) as error:
            raise ValueError(f"{directory / PIPELINE_DIR}: cannot load the diffusion pipeline ({str(error).splitlines()[0]})") from None
        finally:
            if shown:
                diffusers_logging.enable_progress_bar()
        self._pipeline.unet.eval()
