"""The workers that make samples: one process, a pool of local worker processes, or Ray tasks.

Sample ``i`` is made from its own seed (derived from the run seed and ``i``) and its own source
image, in any worker, so the output does not depend on the number or kind of workers.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import uuid
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from ..base import AnomalyGenerator, ImageTooSmallError, check_image
from ..common.png import encode_png
from ..common.random_streams import SOURCE_CYCLE, stream
from ..common.readers import ImageReadError, read_image
from ..common.storage import Store
from .ray_engine import cluster_cpus, ray_session, run_chunks
from .writers import EncodedSample, make_writer, mask_to_uint8

SOURCE_CACHE_BYTES = 256 * 2**20  # decoded source images a worker keeps


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index`` of a run seeded with ``seed`` (63-bit, independent streams)."""
    high, low = np.random.SeedSequence([seed, index]).generate_state(2, np.uint32)
    return int((int(high) << 31) ^ int(low)) & ((1 << 63) - 1)


def source_order(seed: int, n_sources: int, index: int) -> list[int]:
    """Source candidates of sample ``index``: every image once per cycle, each cycle shuffled; on an
    unreadable image the next one in the cycle is used."""
    cycle, position = divmod(index, n_sources)
    order = _cycle_order(seed, n_sources, cycle)
    return order[position:] + order[:position]


@lru_cache(maxsize=4)
def _cycle_order(seed: int, n_sources: int, cycle: int) -> list[int]:
    """One cycle's shuffled order (samples of a cycle mostly run one after another: drawn once)."""
    return [int(i) for i in stream(seed, SOURCE_CYCLE, cycle).permutation(n_sources)]


@dataclass
class GenerationTask:
    """What every worker needs to make the samples of one run (shipped once to each worker)."""

    paths: list[Path | str]  # local paths, or URLs
    root: Path | str
    generator: AnomalyGenerator
    seed: int
    png_compression: int | None = None
    token: str = field(default_factory=lambda: uuid.uuid4().hex)  # a worker given the same run again keeps its cache


class SampleMaker:
    """Makes and encodes the samples of one run in one process, keeping the decoded source images.

    A run cycles through its sources again and again, and decoding is a third of the time per
    sample: sources are kept first come, first kept, up to ``cache_bytes`` (an LRU would miss every
    time on a cyclic order larger than itself), read-only so that a generator cannot change them.
    """

    def __init__(self, task: GenerationTask, cache_bytes: int = SOURCE_CACHE_BYTES) -> None:
        self.task = task
        self.cache_bytes = cache_bytes
        self.sources: dict[Path | str, np.ndarray] = {}
        self.source_bytes = 0

    def read_source(self, path: Path | str) -> np.ndarray:
        image = self.sources.get(path)
        if image is None:
            image = read_image(path)
            if self.source_bytes + image.nbytes <= self.cache_bytes:
                image.flags.writeable = False
                self.sources[path] = image
                self.source_bytes += image.nbytes
        return image

    def make(self, index: int) -> dict[str, Any]:
        """Sample ``index``: ``{"index", "bad": [(path, error)], "sample": EncodedSample}``, or
        ``"error"`` in place of ``"sample"`` when it could not be made."""
        task = self.task
        bad: list[tuple[str, str]] = []
        for candidate in source_order(task.seed, len(task.paths), index):
            path = task.paths[candidate]
            try:
                image = self.read_source(path)
            except ImageReadError as error:
                bad.append((str(path), str(error)))
                continue
            try:
                check_image(image)
                break
            except ImageTooSmallError as error:  # unusable like an unreadable file: the next source takes its turn
                bad.append((str(path), f"{path}: {error}"))
        else:
            return {"index": index, "bad": bad, "error": "no usable source image"}
        seed = sample_seed(task.seed, index)
        try:
            sample = task.generator(image, np.random.default_rng(seed))
        except Exception as error:  # one failing sample must not lose the run
            return {"index": index, "bad": bad, "error": f"{path}: {type(error).__name__}: {error}"}
        encoded = EncodedSample(
            index=index, seed=seed, source=_relative(path, task.root), generator=sample.generator,
            label=sample.label, params=sample.params, image_png=encode_png(sample.image, task.png_compression),
            mask_png=encode_png(mask_to_uint8(sample.mask), task.png_compression),
        )
        return {"index": index, "bad": bad, "sample": encoded}


class _ProcessMaker:
    """The sample maker of this process, for workers that get one run's chunks one after another:
    a local pool worker (set by its initializer) or a long-lived Ray worker (kept while the run's
    token is the same, so its decoded sources are reused)."""

    maker: SampleMaker | None = None

    @classmethod
    def for_task(cls, task: GenerationTask) -> SampleMaker:
        if cls.maker is None or cls.maker.task.token != task.token:
            cls.maker = SampleMaker(task)
        return cls.maker


def _relative(path: Path | str, root: Path | str) -> str:
    if isinstance(path, str):  # a URL
        prefix = str(root).rstrip("/") + "/"
        return path[len(prefix):] if path.startswith(prefix) else path
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _init_pool_worker(task: GenerationTask, set_opencv_threads: bool) -> None:
    """A worker process of the local engine: one thread for BLAS and OpenMP, and for OpenCV, so that
    the workers do not fight over the cores (each pool would start one thread per core)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    if set_opencv_threads:
        cv2.setNumThreads(1)
    _ProcessMaker.for_task(task)


def _make_in_worker(index: int) -> dict[str, Any]:
    return _ProcessMaker.maker.make(index)


def local_results(indices: list[int], workers: int, task: GenerationTask) -> Iterator[dict[str, Any]]:
    """Results in index order, with a bounded number of samples in flight (constant memory)."""
    if workers <= 1:
        maker = SampleMaker(task)
        yield from (maker.make(index) for index in indices)
        return
    # fork: workers start at once with the parent's imports; spawn where fork does not exist
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    # A forked child must not call cv2.setNumThreads once the parent has used OpenCV's thread pool
    # (it hangs); the parent drops to one thread before forking and the children inherit that.
    threads = cv2.getNumThreads()
    if method == "fork":
        cv2.setNumThreads(1)
    try:
        with mp.get_context(method).Pool(workers, initializer=_init_pool_worker, initargs=(task, method != "fork")) as pool:
            pending: deque = deque()
            for index in indices:
                pending.append(pool.apply_async(_make_in_worker, (index,)))
                if len(pending) >= 4 * workers:
                    yield pending.popleft().get()
            while pending:
                yield pending.popleft().get()
    finally:
        cv2.setNumThreads(threads)


def generation_chunks(todo: list[int], fmt: str, shard_size: int, cpus: int) -> list[list[int]]:
    """The distributed engine's tasks. Hub folders: one chunk per shard (a task writes whole shards).
    MVTec folders: runs of at most ``shard_size`` samples, small enough that each of the cluster's
    ``cpus`` gets several."""
    if fmt == "hf":
        size = shard_size
    else:
        size = max(1, min(shard_size, math.ceil(len(todo) / (4 * cpus)))) if todo else 1
    chunks: dict[int, list[int]] = {}
    for index in todo:
        chunks.setdefault(index // size, []).append(index)
    return [chunks[key] for key in sorted(chunks)]


@dataclass
class ChunkJob:
    """What a distributed task needs besides its indices: the run and where and how to write it."""

    task: GenerationTask
    fmt: str
    store: Store
    total: int
    shard_size: int


def _write_chunk(job: ChunkJob, indices: list[int]) -> tuple[list[dict], list[dict]]:
    """One distributed task: make and write ``indices`` (its own process: OpenCV on one thread);
    return the per-sample results and the manifest records."""
    cv2.setNumThreads(1)
    maker = _ProcessMaker.for_task(job.task)
    writer = make_writer(job.fmt, job.store, job.total, job.shard_size, collect=True)
    results = []
    for index in indices:
        result = maker.make(index)
        sample = result.pop("sample", None)
        if sample is not None:
            writer.write(sample)
        else:
            writer.skip(result["index"])
        results.append(result)
    writer.close()
    return results, writer.collected


def distributed_results(
    todo: list[int], job: ChunkJob, workers: int, address: str | None,
) -> Iterator[tuple[dict, list[dict]]]:
    """(result, records) per sample in index order, made and written by Ray tasks; records (the
    chunk's manifest lines) come with the last sample of each chunk, an empty list with the others."""
    with ray_session(address, workers) as ray:
        chunks = generation_chunks(todo, job.fmt, job.shard_size, cluster_cpus(ray, workers))
        for results, records in run_chunks(ray, _write_chunk, job, chunks, workers):
            for k, result in enumerate(results):
                yield result, (records if k == len(results) - 1 else [])
