"""Reading back a dataset written by ``anomalyforge generate`` (either format)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Iterator

import cv2
import numpy as np

from ..common.storage import Store, as_store
from .layout import dataset_format, shards
from .manifest import Manifest


@dataclass
class GeneratedSample:
    image: np.ndarray  # HxWx3 uint8 RGB
    mask: np.ndarray  # float32 HxW in [0, 1]
    record: dict[str, Any]  # the manifest record


def _decode(data: bytes, grey: bool) -> np.ndarray:
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if array is None:
        raise ValueError("not a readable PNG")
    return array if grey else cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def _decode_file(store: Store, relative: str, grey: bool) -> np.ndarray:
    name = store.url(relative)
    try:
        return _decode(store.read_bytes(relative), grey)
    except OSError as error:
        raise ValueError(f"{name}: cannot read ({error.strerror or error})") from None
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def read_generated(
    root: str | Path | Store,
    limit: int | None = None,
    errors: dict[int, str] | None = None,
    indices: Collection[int] | None = None,
) -> Iterator[GeneratedSample]:
    """Samples of a generated dataset in index order, decoded one at a time (only those in ``indices``
    when it is given; the others are not decoded). A sample whose files are missing or corrupt raises
    an error naming the file, or, when an ``errors`` dict is given, is recorded there (index ->
    message) and skipped."""
    store = as_store(root)
    fmt = dataset_format(store)
    count = 0
    wanted = None if indices is None else set(indices)

    def failed(index: int, message: str) -> None:
        if errors is None:
            raise ValueError(message)
        errors[index] = message

    if fmt == "mvtec":
        for index, record in sorted(Manifest(store).load().items()):
            if wanted is not None and index not in wanted:
                continue
            try:
                image = _decode_file(store, record["image"], grey=False)
                if record.get("mask"):
                    mask = _decode_file(store, record["mask"], grey=True).astype(np.float32) / 255.0
                else:
                    mask = np.zeros(image.shape[:2], np.float32)
            except ValueError as error:
                failed(index, str(error))
                continue
            yield GeneratedSample(image, mask, record)
            count += 1
            if limit is not None and count >= limit:
                return
        return
    records = Manifest(store).load()
    for shard, row in _hub_rows(store):
        index = int(row["image"]["path"].split(".")[0])
        if wanted is not None and index not in wanted:
            continue
        record = records.get(index) or {
            "index": index, "seed": row["seed"], "source": row["source"], "generator": row["generator"],
            "label": row["label"], "params": json.loads(row["params"]),
        }
        try:
            image = _decode(row["image"]["bytes"], grey=False)
            mask = _decode(row["mask"]["bytes"], grey=True).astype(np.float32) / 255.0
        except ValueError as error:
            failed(index, f"{shard} ({row['image']['path']}): {error}")
            continue
        yield GeneratedSample(image, mask, record)
        count += 1
        if limit is not None and count >= limit:
            return


def _hub_rows(store: Store) -> Iterator[tuple[str, dict[str, Any]]]:
    """(shard file name, row) of a hub folder's shards, one row group in memory at a time."""
    import pyarrow.parquet as pq

    for shard in shards(store):
        with store.open(shard) as handle:
            parquet = pq.ParquetFile(handle)
            for group in range(parquet.num_row_groups):
                for row in parquet.read_row_group(group).to_pylist():
                    yield shard.rsplit("/", 1)[-1], row
