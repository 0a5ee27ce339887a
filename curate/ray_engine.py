"""The distributed engine: generation and EAP scoring as Ray tasks.

Generation: the samples still to make are cut into chunks (a hub folder's shard, or a run of MVTec
samples); each Ray task makes its chunk with the same per-sample seeds as the local engine and
writes the files itself, straight to the output store, then returns the manifest records. The
driver appends them in index order, so the manifest and the files are those of the local engine.
Scoring: the EAP scorer is fitted once by the driver and shipped to the tasks, which score chunks
of samples read from the dataset's store. Ray is an optional dependency (``pip install
"anomalyforge[ray]"``), imported only here.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from synth.storage import Store

if TYPE_CHECKING:
    from .job import _Context

ENGINES = ("local", "ray")
CANCEL_WAIT_S = 60.0  # how long an interrupted run waits for its cancelled tasks to stop
INSTALL_HINT = 'the Ray engine needs Ray: pip install "anomalyforge[ray]" (or pip install "ray>=2.9")'


def check_engine(engine: str, store: Store | None = None) -> None:
    """A known engine; for Ray, installed and able to reach ``store`` (checked before any work)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if engine == "ray":
        require_ray()
        if store is not None:
            check_shared(store)


def require_ray() -> Any:
    """The ``ray`` module, or an error that says what to install."""
    try:
        import ray
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return ray


@contextmanager
def ray_session(address: str | None, workers: int) -> Iterator[Any]:
    """Ray, started for the block when it is not running yet: on the cluster at ``address``, or
    locally with ``workers`` CPUs (no cluster needed). A Ray the caller started is left running."""
    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        options: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=workers, **options)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def ordered(ray: Any, tasks: Sequence[Callable[[], Any]], in_flight: int) -> Iterator[Any]:
    """Results of the submitted tasks in submission order, with at most ``in_flight`` running (the
    driver's memory stays bounded). When the caller stops early the pending tasks are cancelled and
    waited for: none is still writing when the caller goes on (a resumed run clears what they left)."""
    pending: deque = deque()
    queue = iter(tasks)
    try:
        for submit in queue:
            pending.append(submit())
            if len(pending) >= in_flight:
                yield ray.get(pending.popleft())
        while pending:
            yield ray.get(pending.popleft())
    finally:
        for ref in pending:
            ray.cancel(ref)
        if pending:
            ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_WAIT_S)


def generation_chunks(todo: list[int], fmt: str, shard_size: int, cpus: int) -> list[list[int]]:
    """Hub folders: one chunk per shard (a task writes whole shards). MVTec folders: runs of at most
    ``shard_size`` samples, small enough that each of the cluster's ``cpus`` gets several."""
    if fmt == "hf":
        size = shard_size
    else:
        size = max(1, min(shard_size, math.ceil(len(todo) / (4 * cpus)))) if todo else 1
    chunks: dict[int, list[int]] = {}
    for index in todo:
        chunks.setdefault(index // size, []).append(index)
    return [chunks[key] for key in sorted(chunks)]


def check_shared(store: Store) -> None:
    """Ray workers are other processes (on other machines): they must reach the store."""
    if "memory" in store.protocols:
        raise ValueError(f"{store}: a memory:// store lives in one process; Ray workers cannot reach it (use a "
                         "shared folder or an object store)")


def _cpus(ray: Any, workers: int) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", workers)))


def _generate_chunk(context: "_Context", fmt: str, store: Store, total: int, shard_size: int, indices: list[int]) -> tuple[list[dict], list[dict]]:
    """One task: make and write ``indices``; return the per-sample results and the manifest records."""
    from .job import make_samples
    from .writers import make_writer

    writer = make_writer(fmt, store, total, shard_size, collect=True)
    results = []
    for result in make_samples(indices, context):
        sample = result.pop("sample", None)
        if sample is not None:
            writer.write(sample)
        else:
            writer.skip(result["index"])
        results.append(result)
    writer.close()
    return results, writer.collected


def ray_samples(
    todo: list[int], context: "_Context", fmt: str, store: Store, total: int, shard_size: int, workers: int,
    address: str | None,
) -> Iterator[tuple[dict, list[dict] | None]]:
    """(result, records) per sample in index order; records (the chunk's manifest lines) come with
    the last sample of each chunk, an empty list with the others."""
    with ray_session(address, workers) as ray:
        shared = ray.put(context)
        task = ray.remote(num_cpus=1, max_retries=2)(_generate_chunk)
        cpus = _cpus(ray, workers)
        submits = [
            (lambda chunk=chunk: task.remote(shared, fmt, store, total, shard_size, chunk))
            for chunk in generation_chunks(todo, fmt, shard_size, cpus)
        ]
        for results, records in ordered(ray, submits, 2 * cpus):
            for k, result in enumerate(results):
                yield result, (records if k == len(results) - 1 else [])


def _score_chunk(scorer: Any, store: Store, indices: list[int]) -> tuple[list, dict[int, str]]:
    import torch

    from synth.dataset_reader import read_generated

    from .scoring import score_samples

    scorer.features_.to(scorer.device or ("cuda" if torch.cuda.is_available() else "cpu"))  # a GPU worker uses it
    errors: dict[int, str] = {}
    return score_samples(scorer, read_generated(store, errors=errors, indices=indices)), errors


def ray_scores(
    scorer: Any, store: Store, indices: list[int], workers: int, address: str | None, chunk_size: int,
) -> Iterator[tuple[list, dict[int, str]]]:
    """(candidates, unreadable samples) per chunk of ``indices``, in order, scored by Ray tasks with
    the fitted ``scorer`` (on GPU workers when the cluster has GPUs and the scorer's device is not
    fixed to the CPU)."""
    with ray_session(address, workers) as ray:
        gpus = 0 if str(scorer.device or "").startswith("cpu") else ray.cluster_resources().get("GPU", 0)
        scorer.features_.cpu()  # shipped on the CPU: a worker without a GPU can read it
        shared = ray.put(scorer)
        task = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=2)(_score_chunk)
        chunks = [indices[k:k + chunk_size] for k in range(0, len(indices), chunk_size)]
        submits = [(lambda chunk=chunk: task.remote(shared, store, chunk)) for chunk in chunks]
        yield from ordered(ray, submits, 2 * _cpus(ray, workers))
