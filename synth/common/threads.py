"""How many threads the heavy work runs on: torch, BLAS and OpenMP use one per core by default, and
beside another CPU-bound process those threads spin waiting for each other and the work collapses.

The count is what the process may use (its CPU affinity and its cgroup's quota) less the cores other
processes keep busy when the command starts; the user's choice (``--threads``, a recipe's
``threads``, ``OMP_NUM_THREADS``) wins. Long loops call ``follow_neighbours`` between steps: when
the count was the product's choice, it is chosen again every few seconds from the CPU time other
processes took meanwhile, so a job that starts (or ends) later is followed. Waiting OpenMP threads
spin briefly, then sleep: the many short operations of a small network do not pay a wake-up each
(passive waiting made the diffusion fit 28 % slower), and a neighbour that came between two looks
costs a few seconds of spinning, not the run.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
SHORT_SPIN = "10000"  # about 0.1 ms; GNU OpenMP spins 300000 by default, 0 when passive
CHOSEN = "ANOMALYFORGE_CHOSEN_THREADS"  # marks OMP_NUM_THREADS as our own choice, not the user's
FOLLOW_INTERVAL_S = 2.0  # how often follow_neighbours looks again


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


def users_threads(requested: int | None = None) -> int | None:
    """The count the user chose: ``requested``, else ``OMP_NUM_THREADS`` unless this product set it."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be at least 1, got {requested}")
        return requested
    set_by_user = os.environ.get("OMP_NUM_THREADS", "").strip()
    if set_by_user.isdigit() and int(set_by_user) > 0 and set_by_user != os.environ.get(CHOSEN):
        return int(set_by_user)
    return None


def choose_threads(requested: int | None = None) -> int:
    """The threads to use: the user's choice, else the available CPUs that other processes do not
    keep busy (at least one)."""
    users = users_threads(requested)
    return users if users is not None else threads_beside(busy_cpus(), available_cpus())


def use_threads(requested: int | None = None) -> int:
    """Choose the thread count and apply it: in the environment before torch and BLAS load (their
    pools read it once), and to torch and OpenCV when they are loaded already. Returns the count."""
    users = users_threads(requested)
    threads = choose_threads(users)
    _watch.owner = os.getpid() if users is None else None  # forked workers keep their own count
    _watch.last = None
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # waiting threads sleep instead of spinning...
    os.environ.setdefault("GOMP_SPINCOUNT", SHORT_SPIN)  # ...after a short spin (GNU OpenMP, torch's on Linux)
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    os.environ[CHOSEN] = str(threads)  # a later choice in this process (or its children) may choose again
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(threads)
    return threads


class _NeighbourWatch:
    """The CPU time other processes took between two looks: the machine's busy time (/proc/stat)
    less this process's own."""

    def __init__(self) -> None:
        self.owner: int | None = None  # the process whose count is the product's choice (set by use_threads)
        self.last: tuple[float, float, float] | None = None  # (wall, machine busy, own) seconds

    def look(self, interval_s: float) -> float | None:
        """Cores other processes kept busy since the last look (None: too soon, or no /proc/stat)."""
        now = time.monotonic()
        if self.last is not None and now - self.last[0] < interval_s:
            return None
        busy = machine_busy_seconds()
        if busy is None:
            return None
        sample, self.last = self.last, (now, busy, time.process_time())
        if sample is None:
            return None
        wall = now - sample[0]
        return max(0.0, (busy - sample[1]) - (self.last[2] - sample[2])) / wall if wall > 0 else None


_watch = _NeighbourWatch()


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes have run since boot on the CPUs this process may use (None off
    Linux)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
        mine = {f"cpu{k}" for k in os.sched_getaffinity(0)}
    except (AttributeError, OSError):
        return None
    ticks = 0
    for line in lines:
        fields = line.split()
        if fields and fields[0] in mine:
            # user nice system idle iowait irq softirq steal (guest time is inside user already)
            values = [int(value) for value in fields[1:9]]
            ticks += sum(values) - values[3] - values[4]
    return ticks / os.sysconf("SC_CLK_TCK") if ticks else None


def threads_beside(others: float, cpus: int) -> int:
    """The threads that fit beside other processes keeping ``others`` cores busy (at least one)."""
    return max(1, cpus - int(others + 0.5))


def follow_neighbours(interval_s: float = FOLLOW_INTERVAL_S) -> int | None:
    """Between steps of long work: when the thread count is the product's choice, choose it again
    from the cores other processes kept busy since the last look (at most every ``interval_s``), and
    apply it to torch. Returns the new count when it changed, else None. Cheap when called often."""
    if _watch.owner != os.getpid() or "torch" not in sys.modules:
        return None
    others = _watch.look(interval_s)
    if others is None:
        return None
    torch = sys.modules["torch"]
    threads = threads_beside(others, available_cpus())
    if threads == torch.get_num_threads():
        return None
    log.info("threads %d -> %d: other processes kept %.1f cores busy", torch.get_num_threads(), threads, others)
    torch.set_num_threads(threads)
    return threads
