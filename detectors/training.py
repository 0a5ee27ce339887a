"""The training loop shared by the trained detectors, run through ``accelerate``."""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm

from synth.common.saved import make_accelerator, resolve_mixed_precision, training_autocast
from synth.common.threads import follow_neighbours


def rank_steps(steps: int, rank: int, world: int) -> range:
    """This process's step indices; every process gets the same number (DDP needs equal step counts)."""
    usable = max(world, steps - steps % world)
    return range(rank, usable, world)


def train_loop(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    epochs: int,
    batches: Callable[[int, int, int], Iterable[dict[str, torch.Tensor]]],
    step: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor],
    device: str | None = None,
    mixed_precision: str = "no",
    clip_grad_norm: float | None = None,
    progress: bool = True,
    desc: str = "train",
) -> list[float]:
    """Run ``epochs`` epochs. ``batches(epoch, rank, world)`` yields this process's batches (on CPU);
    ``step(model, batch)`` returns the loss. Returns the mean loss per epoch."""
    precision = resolve_mixed_precision(mixed_precision, device)
    accelerator = make_accelerator(device, precision)
    model, optimizer = accelerator.prepare(model, optimizer)
    history = []
    bar = tqdm(total=epochs, desc=desc, unit="epoch", disable=not progress or not accelerator.is_main_process)
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        for batch in batches(epoch, accelerator.process_index, accelerator.num_processes):
            follow_neighbours()
            batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
            with training_autocast(accelerator, precision):
                loss = step(model, batch)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if clip_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
            total += float(loss.detach())
            count += 1
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}", refresh=False)  # the bar redraws at its own pace (TQDM_MININTERVAL in a log)
        if scheduler is not None:
            scheduler.step()
        history.append(total / max(count, 1))
        bar.update(1)
    bar.close()
    accelerator.wait_for_everyone()
    return history
