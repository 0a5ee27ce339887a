"""The generated-dataset layout: the names of its files and what a folder holds, in one place for the
generation job, the writers, the reader, the card, curation and the detectors' loaders.

Either format holds ``dataset.json`` (the run's settings and state) and ``manifest.jsonl`` (one JSON
line per sample). ``mvtec``: ``test/<generator>/NNNNNN.png`` with
``ground_truth/<generator>/NNNNNN_mask.png``. ``hf``: Parquet shards ``data/train-KKKKK-of-NNNNN.parquet``
and a ``README.md`` dataset card.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..common.storage import Store, as_store

FORMATS = ("mvtec", "hf")
RUN_INFO = "dataset.json"
MANIFEST = "manifest.jsonl"
SHARD_FOLDER = "data"
SHARD_GLOB = "train-*.parquet"  # inside SHARD_FOLDER
SHARD_FILES = f"{SHARD_FOLDER}/train-*"  # the card's data_files pattern


def shard_path(shard: int, n_shards: int) -> str:
    """Shard ``shard`` of ``n_shards``, relative to the dataset root."""
    return f"{SHARD_FOLDER}/train-{shard:05d}-of-{n_shards:05d}.parquet"


def sample_paths(generator: str | None, name: str) -> tuple[str, str | None]:
    """An MVTec-layout sample's image and mask, relative to the dataset root; an unchanged sample
    (``generator`` None) goes to ``test/good/`` and has no mask file."""
    if generator is None:
        return f"test/good/{name}.png", None
    return f"test/{generator}/{name}.png", f"ground_truth/{generator}/{name}_mask.png"


def shards(root: str | Path | Store) -> list[str]:
    """A hub folder's shard files, relative to the root (none in an MVTec folder)."""
    return as_store(root).glob(SHARD_FOLDER, SHARD_GLOB)


def dataset_format(root: str | Path | Store) -> str:
    """``hf`` or ``mvtec``; an error naming the folder when it is not a generated dataset."""
    store = as_store(root)
    if not store.exists():
        raise FileNotFoundError(f"{store} does not exist")
    if shards(store):
        return "hf"
    if store.exists(MANIFEST):
        return "mvtec"
    raise FileNotFoundError(f"{store} is not a dataset written by anomalyforge generate (no {MANIFEST})")


def is_generated_dataset(folder: str | Path | Store) -> bool:
    store = as_store(folder)
    return store.is_file(RUN_INFO) and store.is_file(MANIFEST)


def read_run_info(root: str | Path | Store) -> dict[str, Any]:
    """A generated dataset's ``dataset.json`` ({} when it has none)."""
    store = as_store(root)
    return json.loads(store.read_bytes(RUN_INFO)) if store.exists(RUN_INFO) else {}


def generated_input_folder(folder: str | Path | Store) -> str:
    """The normal-image folder (path or URL) a generated dataset was made from."""
    return json.loads(as_store(folder).read_bytes(RUN_INFO))["input"]
