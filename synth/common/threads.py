"""How many threads the heavy work runs on: torch, BLAS and OpenMP use one per core by default, and
beside another CPU-bound process those threads spin waiting for each other and the work collapses.

The count is what the process may use (its CPU affinity and its cgroup's quota) less the cores other
processes keep busy when the command starts; the user's choice (``--threads``, a recipe's
``threads``, ``OMP_NUM_THREADS``) wins. OpenMP threads are set to wait passively, so that a process
that starts later costs a share of the cores, not a collapse.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
CHOSEN = "ANOMALYFORGE_CHOSEN_THREADS"  # marks OMP_NUM_THREADS as our own choice, not the user's


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity, capped by a cgroup CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cpus, int(quota)) if quota else cpus)


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max``, v1 ``cfs_quota_us``), None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else float(quota) / float(period)
    except (OSError, ValueError):
        pass
    try:
        quota = float(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = float(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def busy_cpus(samples: int = 5, interval_s: float = 0.02) -> int:
    """Cores other processes keep busy now: the runnable processes besides this one that stay
    runnable over a few samples (a CPU-bound job always is; a passing one is not). 0 off Linux."""
    counts = []
    for k in range(samples):
        try:
            stat = Path("/proc/stat").read_text()
        except OSError:
            return 0
        running = next((int(line.split()[1]) for line in stat.splitlines() if line.startswith("procs_running")), 1)
        counts.append(running - 1)  # this process is running while it reads
        if k + 1 < samples:
            time.sleep(interval_s)
    return max(0, min(counts))


def choose_threads(requested: int | None = None) -> int:
    """The threads to use: ``requested``, else ``OMP_NUM_THREADS``, else the available CPUs that
    other processes do not keep busy (at least one)."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be at least 1, got {requested}")
        return requested
    set_by_user = os.environ.get("OMP_NUM_THREADS", "").strip()
    if set_by_user.isdigit() and int(set_by_user) > 0 and set_by_user != os.environ.get(CHOSEN):
        return int(set_by_user)
    cpus = available_cpus()
    return max(1, cpus - busy_cpus())


def use_threads(requested: int | None = None) -> int:
    """Choose the thread count and apply it: in the environment before torch and BLAS load (their
    pools read it once), and to torch and OpenCV when they are loaded already. Returns the count."""
    threads = choose_threads(requested)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # waiting threads sleep instead of spinning
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    os.environ[CHOSEN] = str(threads)  # a later choice in this process (or its children) may choose again
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(threads)
    return threads
