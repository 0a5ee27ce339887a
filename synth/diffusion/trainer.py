"""The step loop both diffusion backends train with: ``accelerate`` for devices and processes, a
progress bar with the loss, and checkpoints that an interrupted training resumes from."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from synth.common.saved import training_autocast
from synth.common.threads import follow_neighbours

from .checkpoint import load_training_state, save_training_state

log = logging.getLogger(__name__)


@dataclass
class TrainingRun:
    """What one training needs from its backend.

    ``batch(rng)`` draws a batch on the CPU; ``loss(modules, batch, generator)`` computes the loss
    on the accelerator's device with the prepared (possibly distributed) ``modules``; ``trained()`` returns the tensors to checkpoint and ``restore(tensors)``
    puts them back; ``after_step()`` runs after each optimiser step (e.g. an EMA update).
    """

    modules: list[torch.nn.Module]
    optimizer: torch.optim.Optimizer
    batch: Callable[[np.random.Generator], dict[str, torch.Tensor]]
    loss: Callable[[list[torch.nn.Module], dict[str, torch.Tensor], torch.Generator], torch.Tensor]
    trained: Callable[[], dict[str, torch.Tensor]]
    restore: Callable[[dict[str, torch.Tensor]], None]
    after_step: Callable[[int], None] = lambda step: None
    parameters: list[torch.nn.Parameter] = field(default_factory=list)


def train(
    run: TrainingRun,
    accelerator,
    steps: int,
    seed: int,
    warmup: int = 0,
    clip_grad_norm: float | None = 1.0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 250,
    fingerprint: dict[str, Any] | None = None,
    progress: bool = True,
    desc: str = "train",
    precision: str = "no",
) -> list[float]:
    """Train for ``steps`` optimiser steps; returns the loss of every step.

    Step ``s`` draws its batch and noise from ``(seed, s, process)``, so a run resumed from a
    checkpoint continues exactly as if it had not stopped. ``fingerprint`` (the settings that
    shape the model) must match the checkpoint's, else resuming is refused. Steps run in
    ``precision``, resolved as ``accelerator`` was made with it (see :func:`make_accelerator`).
    """
    from diffusers.optimization import get_scheduler

    modules = []
    for module in run.modules:  # frozen modules are only moved: DDP refuses a module with nothing to train
        trainable = any(p.requires_grad for p in module.parameters())
        modules.append(accelerator.prepare(module) if trainable else module.to(accelerator.device))
    optimizer = accelerator.prepare(run.optimizer)
    start, history = 0, []
    if checkpoint_dir is not None:
        saved = load_training_state(checkpoint_dir)
        if saved is not None:
            if saved["extra"].get("fingerprint") != (fingerprint or {}):
                raise ValueError(
                    f"{checkpoint_dir}: the checkpoint was made with other settings "
                    f"({saved['extra'].get('fingerprint')}); use a new checkpoint folder"
                )
            run.restore(saved["trained"])
            optimizer.load_state_dict(saved["optimizer"])
            start, history = min(saved["step"], steps), saved["history"][: saved["step"]]
            log.info("resuming training from step %d of %d (%s)", start, steps, checkpoint_dir)
    schedule = get_scheduler(
        "cosine", optimizer, num_warmup_steps=min(warmup, steps), num_training_steps=steps, last_epoch=start - 1
    )
    bar = tqdm(total=steps, initial=start, desc=desc, unit="step", disable=not progress or not accelerator.is_main_process)
    for module in modules:
        module.train()
    rank = accelerator.process_index
    for step in range(start, steps):
        follow_neighbours()
        batch = run.batch(np.random.default_rng([seed, step, rank]))
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        noise = torch.Generator().manual_seed(int(np.random.default_rng([seed, step, rank, 1]).integers(2**63)))
        with training_autocast(accelerator, precision):
            loss = run.loss(modules, batch, noise)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if clip_grad_norm and run.parameters:
            accelerator.clip_grad_norm_(run.parameters, clip_grad_norm)
        optimizer.step()
        schedule.step()
        run.after_step(step + 1)
        history.append(float(loss.detach()))
        recent = history[-50:]
        bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", refresh=False)  # the bar redraws at its own pace
        bar.update(1)
        done = step + 1
        if checkpoint_dir is not None and (done % checkpoint_every == 0 or done == steps):
            if accelerator.is_main_process:
                save_training_state(
                    checkpoint_dir, done, run.trained(), optimizer, history, {"fingerprint": fingerprint or {}}
                )
            accelerator.wait_for_everyone()
    bar.close()
    for module in modules:
        module.eval()
    return history
