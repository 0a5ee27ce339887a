"""Shared pieces of saved, trainable models: their JSON config and the ``accelerate`` setup."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_saved_config(directory: str | Path, filename: str, key: str, what: str) -> tuple[dict[str, Any], str, Path]:
    """The JSON config of a saved model, the class name stored under ``key``, and the file's path;
    a missing or unreadable file is an error naming it (``what`` says what was expected)."""
    directory = Path(directory)
    path = directory / filename
    if not directory.exists():
        raise FileNotFoundError(f"{directory} does not exist")
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a folder (a saved {what} is a folder)")
    if not path.is_file():
        raise FileNotFoundError(f"{directory} holds no saved {what} ({filename} is missing)")
    try:
        saved = json.loads(path.read_text())
        kind = saved[key]
    except (json.JSONDecodeError, KeyError) as error:
        raise ValueError(f"{path}: not a {what} config ({error})") from None
    return saved, kind, path


MIXED_PRECISIONS = ("no", "fp16", "bf16", "auto")
PRECISION_NAMES = {"no": "float32", "fp16": "float16 mixed precision", "bf16": "bfloat16 mixed precision"}


def native_mixed_precision(device: str | None = None) -> str:
    """``"bf16"`` where the training device computes bfloat16 natively (a CUDA GPU that supports it,
    an x86 CPU with AVX512-BF16 or AMX), else ``"no"``. On this project's 2-core CPU it cuts the
    diffusion U-Net's training step by about a third; where bfloat16 is only emulated it would
    slow training down, so it is not chosen there."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    if device not in (None, "cpu"):
        return "no"
    native = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return "bf16" if any(check is not None and check() for check in native) else "no"


def check_mixed_precision(mixed_precision: str | bool) -> str:
    """``mixed_precision`` itself, if it is one of :data:`MIXED_PRECISIONS`; ``False`` (how YAML
    reads ``no`` in a recipe or ``--set mixed_precision=no``) is ``"no"``."""
    if mixed_precision is False:
        return "no"
    if not isinstance(mixed_precision, str) or mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISIONS)}, got {mixed_precision!r}")
    return mixed_precision


def resolve_mixed_precision(mixed_precision: str | bool, device: str | None = None) -> str:
    """The precision training runs in: ``"auto"`` is :func:`native_mixed_precision`'s choice."""
    mixed_precision = check_mixed_precision(mixed_precision)
    return native_mixed_precision(device) if mixed_precision == "auto" else mixed_precision


def make_accelerator(device: str | None = None, precision: str = "no"):
    """An ``accelerate.Accelerator``: CPU when ``device == "cpu"``, else what ``accelerate launch``
    set up, for the ``precision`` that :func:`resolve_mixed_precision` gave. Only float16 goes
    through accelerate's own mixed precision (it needs its loss scaling): accelerate fixes one
    precision per process at its first ``Accelerator``, and a recipe trains a diffusion model and a
    detector in different ones. Steps run under :func:`training_autocast`."""
    from accelerate import Accelerator

    return Accelerator(cpu=device == "cpu", mixed_precision="fp16" if precision == "fp16" else "no")


def training_autocast(accelerator, precision: str):
    """The context a training step's forward pass runs in, for the ``precision`` that
    :func:`resolve_mixed_precision` gave: bfloat16 autocast on the accelerator's device (it needs no
    loss scaling), else accelerate's (float16, or nothing)."""
    import torch

    if precision == "bf16":
        return torch.autocast(accelerator.device.type, dtype=torch.bfloat16)
    return accelerator.autocast()
