"""The distributed engine: work cut into chunks and run as Ray tasks, results in order.

Generation (``synth.dataset.generation``) makes and writes a chunk of samples per task; EAP scoring
(``curate``) scores a chunk of samples per task. What every task needs is put into Ray's object store
once. Ray is an optional dependency (``pip install "anomalyforge[ray]"``), imported only here.
"""

from __future__ import annotations

import logging
from collections import deque
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from ..common.storage import Store

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


def check_shared(store: Store) -> None:
    """Ray workers are other processes (on other machines): they must reach the store."""
    if "memory" in store.protocols:
        raise ValueError(f"{store}: a memory:// store lives in one process; Ray workers cannot reach it (use a "
                         "shared folder or an object store)")


def cluster_cpus(ray: Any, workers: int) -> int:
    """The CPUs of the Ray cluster (``workers`` when it does not say)."""
    return max(1, int(ray.cluster_resources().get("CPU", workers)))


def run_chunks(
    ray: Any, function: Callable[[Any, list[int]], Any], shared: Any, chunks: list[list[int]], workers: int,
    gpus: int = 0,
) -> Iterator[Any]:
    """``function(shared, chunk)`` per chunk as Ray tasks, results in chunk order; ``shared`` is put
    into the object store once, and each task takes ``gpus`` GPUs."""
    reference = ray.put(shared)
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=2)(function)
    submits = [(lambda chunk=chunk: task.remote(reference, chunk)) for chunk in chunks]
    yield from ordered(ray, submits, 2 * cluster_cpus(ray, workers))
