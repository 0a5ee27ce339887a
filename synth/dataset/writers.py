"""Streaming dataset writers: an MVTec-AD layout folder, or a Hugging Face hub-ready folder.

Both keep constant memory whatever the count, write atomically, and on ``open`` report which sample
indices are already on disk so an interrupted run can finish without duplicates or lost samples.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..common.storage import Store, as_store
from .layout import FORMATS, SHARD_FOLDER, sample_paths, shard_path, shards
from .manifest import Manifest


@dataclass
class EncodedSample:
    """A generated sample ready for writing: PNG bytes and the metadata the manifest records."""

    index: int
    seed: int
    source: str
    generator: str
    label: int
    params: dict[str, Any]
    image_png: bytes
    mask_png: bytes
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.index:06d}"

    def record(self) -> dict[str, Any]:
        return {
            "index": self.index, "seed": self.seed, "source": self.source, "generator": self.generator,
            "label": self.label, "params": self.params, **self.extra,
        }


def mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    """Masks are stored as 8-bit grey: binary masks exactly, soft masks to the nearest 1/255."""
    return np.rint(np.clip(mask, 0.0, 1.0) * 255.0).astype(np.uint8)


class DatasetWriter(ABC):
    """Common part of the writers: the manifest and the resume bookkeeping.

    ``root`` is a local folder or an fsspec URL. Manifest lines are appended as samples are written
    (on a local disk one by one; on other stores, which rewrite the file to append, in batches of
    ``manifest_batch``). A writer made with ``collect=True`` writes the files but hands the manifest
    records back in ``collected`` instead: the distributed engine's workers write, the driver keeps
    the manifest.
    """

    format: str

    def __init__(self, root: str | Path | Store, collect: bool = False, manifest_batch: int | None = None) -> None:
        self.store = as_store(root)
        self.manifest = Manifest(self.store)
        self.manifest_batch = manifest_batch or (1 if self.store.local is not None else 256)
        self.collected: list[dict] | None = [] if collect else None
        self._pending: list[dict] = []

    @abstractmethod
    def open(self) -> set[int]:
        """Prepare the folder, repair what an interrupted run left, return the indices already written."""

    @abstractmethod
    def write(self, sample: EncodedSample) -> None:
        """Write one sample (samples arrive in increasing index order)."""

    def skip(self, index: int) -> None:
        """A sample that could not be made; nothing is written for it."""

    def add_records(self, records: list[dict], flush: bool = False) -> None:
        """Manifest records of samples whose files are complete."""
        if self.collected is not None:
            self.collected.extend(records)
            return
        self._pending.extend(records)
        if flush or len(self._pending) >= self.manifest_batch:
            self.flush_records()

    def flush_records(self) -> None:
        if self._pending:
            self.manifest.append(self._pending)
            self._pending = []

    def close(self) -> None:
        """Finish pending writes."""
        self.flush_records()

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class MVTecWriter(DatasetWriter):
    """``test/<generator>/<index>.png`` with ``ground_truth/<generator>/<index>_mask.png``;
    unchanged samples go to ``test/good/``."""

    format = "mvtec"

    def paths(self, record: dict) -> tuple[str, str | None]:
        """The image and mask files of a record, relative to the root."""
        return sample_paths(None if record["label"] == 0 else record["generator"], f"{int(record['index']):06d}")

    def open(self) -> set[int]:
        self.store.make_folder()
        self.store.remove_temporaries()
        records = self.manifest.load()
        present = set(self.store.files()) if records else set()
        backed = {}
        for index, record in records.items():
            image, mask = self.paths(record)
            if image in present and (mask is None or mask in present):
                backed[index] = record
        if self.manifest.exists():
            self.manifest.rewrite(backed.values())
        return set(backed)

    def write(self, sample: EncodedSample) -> None:
        record = sample.record()
        image, mask = self.paths(record)
        self.store.write_atomic(image, sample.image_png)
        if mask is not None:
            self.store.write_atomic(mask, sample.mask_png)
        record["image"] = image
        record["mask"] = mask
        self.add_records([record])


HF_FEATURES = {
    "image": {"_type": "Image"}, "mask": {"_type": "Image"}, "label": {"dtype": "int64", "_type": "Value"},
    "generator": {"dtype": "string", "_type": "Value"}, "params": {"dtype": "string", "_type": "Value"},
    "seed": {"dtype": "int64", "_type": "Value"}, "source": {"dtype": "string", "_type": "Value"},
    "eap": {"dtype": "float64", "_type": "Value"},
}


def hf_schema() -> Any:
    """Arrow schema of the shards, with the ``datasets`` feature metadata so images decode as images."""
    import pyarrow as pa  # imported here: the MVTec layout does not need it

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([
        ("image", image), ("mask", image), ("label", pa.int64()), ("generator", pa.string()),
        ("params", pa.string()), ("seed", pa.int64()), ("source", pa.string()), ("eap", pa.float64()),
    ])
    return schema.with_metadata({"huggingface": json.dumps({"info": {"features": HF_FEATURES}})})


class HubFolderWriter(DatasetWriter):
    """Parquet shards ``data/train-KKKKK-of-NNNNN.parquet`` (images and masks embedded as PNG bytes)
    that ``datasets.load_dataset(folder)`` reads; the dataset card is written by the caller.

    Shard ``k`` holds samples ``k * shard_size`` up to the next shard; a shard becomes visible only
    when complete, and its manifest lines are appended after that.
    """

    format = "hf"

    def __init__(
        self, root: str | Path | Store, total: int, shard_size: int = 1000, row_group: int = 64, collect: bool = False,
    ) -> None:
        super().__init__(root, collect=collect)
        if total < 1 or shard_size < 1:
            raise ValueError("total and shard_size must be positive")
        self.total = total
        self.shard_size = shard_size
        self.row_group = row_group
        self.n_shards = math.ceil(total / shard_size)
        self._schema = hf_schema()
        self._writer = None  # a pyarrow ParquetWriter while a shard is open
        self._shard: int | None = None
        self._tmp: str | None = None
        self._rows: list[dict] = []
        self._records: list[dict] = []

    def shard_path(self, shard: int) -> str:
        """Shard ``shard``'s file, relative to the root."""
        return shard_path(shard, self.n_shards)

    def shard_range(self, shard: int) -> range:
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.total))

    def open(self) -> set[int]:
        self.store.make_folder(SHARD_FOLDER)
        self.store.remove_temporaries()
        self._adopt_shards_of_smaller_run()
        records = self.manifest.load()
        present = set(shards(self.store))
        backed: dict[int, dict] = {}
        for shard in range(self.n_shards):
            path = self.shard_path(shard)
            if path not in present:
                continue
            for record in self._shard_records(path):
                backed[record["index"]] = {**records.get(record["index"], record), "shard": record["shard"], "row": record["row"]}
        if self.manifest.exists() or backed:
            self.manifest.rewrite(backed.values())
        return set(backed)

    def _adopt_shards_of_smaller_run(self) -> None:
        """A dataset grown to a larger ``total``: its full shards are renamed to the new shard count, a
        last partial one is dropped (its samples are made again, identical)."""
        for path in shards(self.store):
            name = posixpath.basename(path)
            if name.endswith(f"-of-{self.n_shards:05d}.parquet"):
                continue
            shard = int(name.split("-")[1])
            if shard >= self.n_shards:
                raise FileExistsError(f"{self.store} holds shards of a larger run ({name}); use a new output folder")
            import pyarrow.parquet as pq

            with self.store.open(path) as handle:
                rows = pq.ParquetFile(handle).metadata.num_rows
            if rows == len(self.shard_range(shard)):
                self.store.replace(path, self.shard_path(shard))
            else:
                self.store.remove(path)

    def _shard_records(self, path: str) -> list[dict]:
        """Manifest records rebuilt from a shard's own columns (after a crash before the manifest append)."""
        import pyarrow.parquet as pq

        with self.store.open(path) as handle:
            table = pq.read_table(handle, columns=["image.path", "label", "generator", "params", "seed", "source"])
        out = []
        for row_number, row in enumerate(table.to_pylist()):
            index = int(row["path"].split(".")[0])  # the image file name carries the index
            out.append({
                "index": index, "seed": row["seed"], "source": row["source"], "generator": row["generator"],
                "label": row["label"], "params": json.loads(row["params"]), "shard": posixpath.basename(path),
                "row": row_number,
            })
        return out

    def _end_shard(self, commit: bool = True) -> None:
        """Close the open shard: publish it with its manifest lines, or (incomplete) discard it."""
        if self._shard is None:
            return
        if commit:
            self._flush_rows()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._tmp is not None:
            if commit:
                self.store.upload(self._tmp, self.shard_path(self._shard))
                self.add_records(self._records, flush=True)
            elif os.path.exists(self._tmp):
                os.unlink(self._tmp)
        self._shard, self._tmp, self._rows, self._records = None, None, [], []

    def _new_tmp(self, shard: int) -> str:
        """Where a shard is written before it is published: beside it on a local disk, else in the
        local temporary folder (uploaded whole when complete)."""
        if self.store.local is not None:
            self.store.make_folder(SHARD_FOLDER)
            return self.store.path(f"{SHARD_FOLDER}/.tmp-{os.getpid()}-train-{shard:05d}.parquet")
        handle, path = tempfile.mkstemp(prefix=".tmp-train-", suffix=".parquet")
        os.close(handle)
        return path

    def _flush_rows(self) -> None:
        if not self._rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            self._tmp = self._new_tmp(self._shard)
            self._writer = pq.ParquetWriter(self._tmp, self._schema)
        columns = {name: [row[name] for row in self._rows] for name in self._schema.names}
        arrays = [pa.array(columns[name], type=field.type) for name, field in zip(self._schema.names, self._schema)]
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema))
        self._rows = []

    def _advance(self, index: int) -> None:
        shard = index // self.shard_size
        if shard != self._shard:
            self._end_shard()
            self._shard = shard

    def write(self, sample: EncodedSample) -> None:
        self._advance(sample.index)
        self._rows.append({
            "image": {"bytes": sample.image_png, "path": f"{sample.name}.png"},
            "mask": {"bytes": sample.mask_png, "path": f"{sample.name}_mask.png"},
            "label": sample.label, "generator": sample.generator,
            "params": json.dumps(sample.params, sort_keys=True), "seed": sample.seed, "source": sample.source,
            "eap": sample.extra.get("eap"),
        })
        record = sample.record()
        record.update(shard=posixpath.basename(self.shard_path(self._shard)), row=len(self._records))
        self._records.append(record)
        if len(self._rows) >= self.row_group:
            self._flush_rows()
        if sample.index == self.shard_range(self._shard)[-1]:
            self._end_shard()

    def skip(self, index: int) -> None:
        self._advance(index)
        if index == self.shard_range(self._shard)[-1]:
            self._end_shard()

    def close(self) -> None:
        """A shard still open here is incomplete (the run was interrupted): it is redone on resume."""
        self._end_shard(commit=False)
        super().close()


def make_writer(
    fmt: str, root: str | Path | Store, total: int, shard_size: int = 1000, collect: bool = False,
) -> DatasetWriter:
    if fmt == "mvtec":
        return MVTecWriter(root, collect=collect)
    if fmt == "hf":
        return HubFolderWriter(root, total, shard_size, collect=collect)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
