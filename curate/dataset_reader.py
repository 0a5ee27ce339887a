"""Reading back a dataset written by ``anomalyforge generate`` (either format)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pyarrow.parquet as pq

from .manifest import Manifest


@dataclass
class GeneratedSample:
    image: np.ndarray  # HxWx3 uint8 RGB
    mask: np.ndarray  # float32 HxW in [0, 1]
    record: dict[str, Any]  # the manifest record


def _decode(data: bytes, grey: bool) -> np.ndarray:
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if array is None:
        raise ValueError("corrupt PNG in generated dataset")
    return array if grey else cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def dataset_format(root: str | Path) -> str:
    root = Path(root)
    if (root / "data").is_dir() and any((root / "data").glob("train-*.parquet")):
        return "hf"
    if (root / "manifest.jsonl").exists():
        return "mvtec"
    raise FileNotFoundError(f"{root} is not a dataset written by anomalyforge generate (no manifest.jsonl)")


def read_generated(root: str | Path, limit: int | None = None) -> Iterator[GeneratedSample]:
    """Samples of a generated dataset in index order, decoded one at a time."""
    root = Path(root)
    fmt = dataset_format(root)
    count = 0
    if fmt == "mvtec":
        for index, record in sorted(Manifest(root).load().items()):
            image = _decode((root / record["image"]).read_bytes(), grey=False)
            if record.get("mask"):
                mask = _decode((root / record["mask"]).read_bytes(), grey=True).astype(np.float32) / 255.0
            else:
                mask = np.zeros(image.shape[:2], np.float32)
            yield GeneratedSample(image, mask, record)
            count += 1
            if limit is not None and count >= limit:
                return
        return
    records = Manifest(root).load()
    for shard in sorted((root / "data").glob("train-*.parquet")):
        parquet = pq.ParquetFile(shard)
        for group in range(parquet.num_row_groups):
            for row in parquet.read_row_group(group).to_pylist():
                index = int(row["image"]["path"].split(".")[0])
                record = records.get(index) or {
                    "index": index, "seed": row["seed"], "source": row["source"], "generator": row["generator"],
                    "label": row["label"], "params": json.loads(row["params"]),
                }
                image = _decode(row["image"]["bytes"], grey=False)
                mask = _decode(row["mask"]["bytes"], grey=True).astype(np.float32) / 255.0
                yield GeneratedSample(image, mask, record)
                count += 1
                if limit is not None and count >= limit:
                    return
