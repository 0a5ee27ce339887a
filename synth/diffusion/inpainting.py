"""The pretrained backend: a Stable Diffusion inpainting pipeline (the user's weights, from a folder
or a hub id) learns one new word per defect type by textual inversion, optionally with LoRA on
the U-Net, under a loss weighted to the defect region (the AnoGen / AnomalyDiffusion recipe)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..common.saved import make_accelerator
from .generator import DefectDiffusion
from .trainer import TrainingRun, train
from .training_windows import TrainingWindows

EMBEDDINGS_DIR = "textual_inversion"
LORA_DIR = "lora"
LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]


def load_inpainting_pipeline(pretrained: str | Path):
    """``StableDiffusionInpaintPipeline.from_pretrained`` without the safety checker, with a clear
    error naming the source when it cannot be loaded."""
    from diffusers import StableDiffusionInpaintPipeline

    try:
        return StableDiffusionInpaintPipeline.from_pretrained(
            str(pretrained), safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    except Exception as error:  # OSError, ValueError, hub errors: all mean "cannot load this"
        raise ValueError(f"{pretrained}: cannot load a Stable Diffusion inpainting pipeline ({str(error).splitlines()[0]})") from None


class PretrainedDefectDiffusion(DefectDiffusion):
    """Few-shot defects from a pretrained Stable Diffusion inpainting model (see
    :class:`DefectDiffusion` for the shared arguments).

    Each defect type gets a new token (``<af-TYPE>``) whose embedding is learned from the shots'
    windows; with ``lora_rank`` > 0 the U-Net's attention projections also get LoRA adapters
    (peft). The loss is the diffusion loss weighted ``mask_weight`` times inside the defect.
    Generation inpaints the window around a new mask with ``prompt``.

    Args:
        pretrained: folder or hub id of a ``StableDiffusionInpaintPipeline``.
        prompt: text with ``{token}`` where the defect's word goes.
        initializer: word whose embedding starts the new tokens.
        lora_rank: LoRA rank on the U-Net (0: textual inversion only).
        lora_learning_rate: learning rate of the LoRA weights (``learning_rate`` is the embeddings').
        mask_weight: loss weight inside the defect relative to outside.
        flip: turn and mirror the training windows.
    """

    kind = "pretrained"

    def __init__(
        self,
        pretrained: str | None = None,
        prompt: str = "a photo of a {token} defect",
        initializer: str = "scratch",
        lora_rank: int = 0,
        lora_learning_rate: float = 1e-4,
        mask_weight: float = 5.0,
        flip: bool = True,
        resolution: int = 512,
        min_window: int = 64,
        num_inference_steps: int = 30,
        guidance_scale: float = 7.5,
        train_steps: int = 1000,
        batch_size: int = 4,
        learning_rate: float = 5e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            resolution=resolution, min_window=min_window, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, train_steps=train_steps, batch_size=batch_size,
            learning_rate=learning_rate, **kwargs,
        )
        if "{token}" not in prompt:
            raise ValueError(f"prompt must contain {{token}}, got {prompt!r}")
        self.pretrained = None if pretrained is None else str(pretrained)
        self.prompt = prompt
        self.initializer = initializer
        self.lora_rank = lora_rank
        self.lora_learning_rate = lora_learning_rate
        self.mask_weight = mask_weight
        self.flip = flip

    def token(self, defect: str) -> str:
        """The learned word of a defect type."""
        return f"<af-{defect}>"

    def _model_config(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "pretrained": self.pretrained, "lora_rank": self.lora_rank}

    def _window_options(self) -> dict[str, Any]:
        return {"normal_fraction": 0.0, "flip": self.flip}

    def _prompt_ids(self, tokenizer, defects: Sequence[str]) -> torch.Tensor:
        prompts = [self.prompt.format(token=self.token(d)) for d in defects]
        return tokenizer(
            prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids

    def _add_tokens(self, pipeline) -> list[int]:
        """Add the defect words to the tokenizer and the text encoder, starting from the initializer."""
        tokenizer, text_encoder = pipeline.tokenizer, pipeline.text_encoder
        tokens = [self.token(d) for d in self._defects]
        if tokenizer.add_tokens(tokens) != len(tokens):
            raise ValueError(f"the tokenizer already holds one of {tokens}")
        ids = tokenizer.convert_tokens_to_ids(tokens)
        text_encoder.resize_token_embeddings(len(tokenizer))
        start = tokenizer(self.initializer, add_special_tokens=False).input_ids
        with torch.no_grad():
            table = text_encoder.get_input_embeddings().weight
            table[ids] = table[start].mean(0) if start else table[: min(ids)].mean(0)
        return ids

    def _train(self, windows: TrainingWindows, precision: str, progress: bool, checkpoint_dir: str | Path | None) -> list[float]:
        from diffusers import DDPMScheduler

        if self.pretrained is None:
            raise ValueError("PretrainedDefectDiffusion needs pretrained= (a folder or hub id of an inpainting pipeline)")
        torch.manual_seed(self.seed)
        pipeline = load_inpainting_pipeline(self.pretrained)
        ids = self._add_tokens(pipeline)
        vae, unet, text_encoder, tokenizer = pipeline.vae, pipeline.unet, pipeline.text_encoder, pipeline.tokenizer
        for module in (vae, unet, text_encoder):
            module.requires_grad_(False)
        table = text_encoder.get_input_embeddings().weight
        table.requires_grad_(True)
        keep_rows = torch.zeros(len(table), 1)
        keep_rows[ids] = 1.0
        table.register_hook(lambda grad: grad * keep_rows.to(grad.device, grad.dtype))
        groups = [{"params": [table], "lr": self.learning_rate}]
        lora: list[torch.nn.Parameter] = []
        if self.lora_rank > 0:
            from peft import LoraConfig

            unet.add_adapter(
                LoraConfig(r=self.lora_rank, lora_alpha=self.lora_rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS)
            )
            lora = [p for p in unet.parameters() if p.requires_grad]
            groups.append({"params": lora, "lr": self.lora_learning_rate})
        optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
        noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
        accelerator = make_accelerator(self.device, precision)
        vae.to(accelerator.device)
        scaling = vae.config.scaling_factor

        def loss(modules, batch, generator):
            encoder, model = modules
            image, mask = batch["image"], batch["mask"]
            with torch.no_grad():
                latents = vae.encode(image).latent_dist.sample(generator) * scaling
                masked = vae.encode(image * (mask < 0.5)).latent_dist.mode() * scaling
            small_mask = F.interpolate(mask, size=latents.shape[-2:], mode="nearest")
            noise = torch.randn(latents.shape, generator=generator).to(latents.device)
            steps = noise_scheduler.config.num_train_timesteps
            t = torch.randint(0, steps, (len(latents),), generator=generator).to(latents.device)
            noisy = noise_scheduler.add_noise(latents, noise, t)
            prompt_ids = self._prompt_ids(tokenizer, [self._defects[int(k) - 1] for k in batch["label"]])
            hidden = encoder(prompt_ids.to(latents.device))[0]
            output = model(torch.cat([noisy, small_mask, masked], dim=1), t, encoder_hidden_states=hidden).sample
            if noise_scheduler.config.prediction_type == "v_prediction":
                target = noise_scheduler.get_velocity(latents, noise, t)
            else:
                target = noise
            weight = 1.0 + (self.mask_weight - 1.0) * small_mask
            return (weight * (output.float() - target.float()) ** 2).mean() / weight.mean()

        def trained() -> dict[str, torch.Tensor]:
            tensors = {"embeddings": table.detach()[ids]}
            if lora:
                from peft import get_peft_model_state_dict

                tensors |= {f"lora.{k}": v for k, v in get_peft_model_state_dict(accelerator.unwrap_model(unet)).items()}
            return tensors

        def restore(tensors: dict[str, torch.Tensor]) -> None:
            with torch.no_grad():
                table[ids] = tensors["embeddings"].to(table.device, table.dtype)
            if lora:
                from peft import set_peft_model_state_dict

                state = {k[5:]: v for k, v in tensors.items() if k.startswith("lora.")}
                set_peft_model_state_dict(accelerator.unwrap_model(unet), state)

        run = TrainingRun(
            [text_encoder, unet], optimizer, lambda rng: windows.batch(rng, self.batch_size), loss, trained, restore,
            parameters=[table, *lora],
        )
        history = train(
            run, accelerator, self.train_steps, self.seed, warmup=min(50, self.train_steps // 10),
            checkpoint_dir=checkpoint_dir, checkpoint_every=self.checkpoint_every, fingerprint=self.fingerprint(),
            progress=progress, desc="diffusion (textual inversion" + (" + LoRA)" if lora else ")"),
            precision=precision,
        )
        pipeline.text_encoder = accelerator.unwrap_model(text_encoder).eval()
        pipeline.unet = accelerator.unwrap_model(unet).eval()
        table.requires_grad_(False)
        self._pipeline = pipeline
        return history

    def _paint_one(self, pipeline, window, hole, defect, generator) -> np.ndarray:
        from PIL import Image

        result = pipeline(
            prompt=self.prompt.format(token=self.token(defect)),
            image=Image.fromarray(window),
            mask_image=Image.fromarray(np.where(hole, 255, 0).astype(np.uint8)),
            height=self.resolution,
            width=self.resolution,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            generator=generator,
            output_type="np",
        ).images[0]
        return np.clip(np.rint(result * 255.0), 0, 255).astype(np.uint8)

    def _save_model(self, directory: Path) -> None:
        """Textual inversion files (one ``{token: embedding}`` safetensors per defect, as
        ``load_textual_inversion`` reads them) and, with LoRA, diffusers' LoRA weights."""
        pipeline = self._pipeline
        table = pipeline.text_encoder.get_input_embeddings().weight
        (directory / EMBEDDINGS_DIR).mkdir(parents=True, exist_ok=True)
        for defect in self._defects:
            token = self.token(defect)
            row = table[pipeline.tokenizer.convert_tokens_to_ids(token)].detach().cpu().clone()
            save_file({token: row}, str(directory / EMBEDDINGS_DIR / f"{defect}.safetensors"))
        if self.lora_rank > 0:
            from diffusers.utils import convert_state_dict_to_diffusers
            from peft import get_peft_model_state_dict

            layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipeline.unet))
            type(pipeline).save_lora_weights(directory / LORA_DIR, unet_lora_layers=layers, safe_serialization=True)

    def _load_model(self, directory: Path) -> None:
        pipeline = load_inpainting_pipeline(self.pretrained)
        files = [str(directory / EMBEDDINGS_DIR / f"{d}.safetensors") for d in self._defects]
        try:
            pipeline.load_textual_inversion(files, token=[self.token(d) for d in self._defects])
            if self.lora_rank > 0:
                pipeline.load_lora_weights(str(directory / LORA_DIR))
        except Exception as error:  # missing or corrupt files
            raise ValueError(f"{directory}: cannot load the learned defect weights ({str(error).splitlines()[0]})") from None
        self._pipeline = pipeline
