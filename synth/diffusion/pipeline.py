"""DDIM sampling of the from-scratch mask-conditioned U-Net, as a diffusers pipeline."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DiffusionPipeline, UNet2DModel

NORMAL_CLASS = 0  # class 0 fills a hole with normal surface; class i > 0 paints defect type i


def unet_input(noisy: torch.Tensor, known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The 7 input channels: noisy image, image with the hole blanked, and the hole's mask."""
    return torch.cat([noisy, known * (1.0 - mask), mask], dim=1)


class MaskedDefectPipeline(DiffusionPipeline):
    """Paints the masked part of image windows with a mask-conditioned ``UNet2DModel``.

    Inputs are windows in [-1, 1] (Bx3xSxS) and masks (Bx1xSxS, 1 = paint). At each DDIM step the
    known part is replaced by the window noised to that step, so the painted part is made to fit
    it; ``guidance_scale`` > 1 pushes the defect class away from the normal class
    (classifier-free guidance, which the training's normal windows make possible).
    """

    def __init__(self, unet: UNet2DModel, scheduler: DDIMScheduler) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        class_labels: torch.Tensor,
        num_inference_steps: int = 25,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        device, dtype = self.unet.device, self.unet.dtype
        image = image.to(device, dtype)
        mask = (mask > 0.5).to(device, dtype)
        class_labels = class_labels.to(device)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        sample = torch.randn(image.shape, generator=generator, dtype=dtype).to(device)
        sample = sample * self.scheduler.init_noise_sigma
        timesteps = self.scheduler.timesteps
        for i, t in enumerate(self.progress_bar(timesteps)):
            model_in = unet_input(sample, image, mask)
            if guidance_scale != 1.0:
                both = self.unet(
                    model_in.repeat(2, 1, 1, 1), t, class_labels=torch.cat([class_labels, torch.zeros_like(class_labels)])
                ).sample
                painted, normal = both.chunk(2)
                output = normal + guidance_scale * (painted - normal)
            else:
                output = self.unet(model_in, t, class_labels=class_labels).sample
            sample = self.scheduler.step(output, t, sample).prev_sample
            if i + 1 < len(timesteps):
                noise = torch.randn(image.shape, generator=generator, dtype=dtype).to(device)
                known = self.scheduler.add_noise(image, noise, timesteps[i + 1 : i + 2])
            else:
                known = image
            sample = mask * sample + (1.0 - mask) * known
        return sample.clamp(-1.0, 1.0)
