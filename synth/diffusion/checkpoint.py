"""Resumable training state in safetensors + JSON (no pickle): trained tensors, the optimiser's
state, and the step and loss history."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "trainer_state.json"
TENSORS_FILE = "trainer_state.safetensors"


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in meta["plain"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_training_state(
    directory: str | Path,
    step: int,
    trained: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    history: list[float],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the state after ``step`` steps; the JSON is written last, so a half-written state is
    never taken for a finished one."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    tensors = {f"trained.{k}": v.detach().cpu().contiguous() for k, v in trained.items()} | opt_tensors
    tmp = directory / (TENSORS_FILE + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, directory / TENSORS_FILE)
    meta = {"step": step, "history": history, "optimizer": opt_meta, "extra": extra or {}}
    tmp = directory / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, directory / STATE_FILE)
    return directory


def load_training_state(directory: str | Path) -> dict[str, Any] | None:
    """The saved state (``step``, ``history``, ``trained`` tensors, ``optimizer`` state dict,
    ``extra``), or ``None`` when ``directory`` holds none."""
    directory = Path(directory)
    if not (directory / STATE_FILE).is_file():
        return None
    try:
        meta = json.loads((directory / STATE_FILE).read_text())
        tensors = load_file(str(directory / TENSORS_FILE))
    except Exception as error:  # JSON, OS and safetensors errors
        raise ValueError(f"{directory}: cannot read the training checkpoint ({str(error).splitlines()[0]})") from None
    trained = {k[len("trained."):]: v for k, v in tensors.items() if k.startswith("trained.")}
    return {
        "step": int(meta["step"]),
        "history": list(meta["history"]),
        "trained": trained,
        "optimizer": _unflatten_optimizer(tensors, meta["optimizer"]),
        "extra": meta.get("extra", {}),
    }
