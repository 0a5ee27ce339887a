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


def make_accelerator(device: str | None = None, mixed_precision: str = "no"):
    """An ``accelerate.Accelerator``: CPU when ``device == "cpu"``, else what ``accelerate launch`` set up."""
    from accelerate import Accelerator

    return Accelerator(cpu=device == "cpu", mixed_precision=mixed_precision)
