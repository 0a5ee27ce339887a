"""The cost of a busy machine: ``anomalyforge train``, ``predict`` and ``fit-defects`` on one
category alone and beside one other CPU-bound process (a numpy loop), as ratios to the quiet time.

The neighbour either runs before the command starts (the command sees it and chooses fewer
threads) or starts ``--late`` seconds after (the command's threads are chosen already; what
OpenMP's waiting threads do then decides the cost).

    python -m benchmarks.threads                                # hazelnut_toy in ../shared/data
    python -m benchmarks.threads ../shared/data/screw --checkout ../other-clone   # another version's code
    python -m benchmarks.threads ../shared/data/magnetic_tile --commands fit-defects --fit-steps 300

``--checkout`` runs the commands from another checkout of the project (its packages first on the
path), so that a version before a change is measured on the same machine in the same run.
Measure with nothing else running.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .shared_data import SHARED

BUSY = "import numpy as np\na = np.random.rand(300, 300)\nwhile True:\n    a = np.sin(a) + 0.1\n"
COMMANDS = ("train", "predict", "fit-defects")
NEIGHBOURS = ("quiet", "before", "late")


def clean_environment(checkout: Path | None) -> dict[str, str]:
    """This process's environment without thread settings, so the product chooses its own."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("OMP_", "MKL_", "OPENBLAS_", "GOMP_", "ANOMALYFORGE_"))}
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout.resolve())
    return env


def timed(command: list[str], env: dict[str, str], cwd: Path | None, late_s: float | None) -> float:
    """Seconds ``command`` takes; with ``late_s``, a busy neighbour starts that long after it."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    neighbour = None
    try:
        if late_s is not None:
            try:
                process.wait(timeout=late_s)
            except subprocess.TimeoutExpired:
                neighbour = busy_neighbour(env)
        _, error = process.communicate()
    finally:
        stop(neighbour)
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{error.decode(errors='replace')[-2000:]}")
    return time.perf_counter() - start


def busy_neighbour(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BUSY],
                            env={**env, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})


def stop(neighbour: subprocess.Popen | None) -> None:
    if neighbour is not None:
        neighbour.kill()
        neighbour.wait()


def measure(category: Path, checkout: Path | None, neighbour: str, commands: list[str], late_s: float,
            fit_steps: int, work: Path) -> dict[str, float]:
    env = clean_environment(checkout)
    cli = [sys.executable, "-m", "anomalyforge.cli"]
    run = work / neighbour
    lines = {
        "train": [*cli, "train", "--data", str(category), "--out", str(run), "--no-reference", "--quiet"],
        "predict": [*cli, "predict", "--model", str(run), "--input", str(category / "test"), "--out",
                    str(run / "pred"), "--quiet"],
        "fit-defects": [*cli, "fit-defects", "--data", str(category), "--out", str(run / "defects"),
                        "--steps", str(fit_steps), "--preview", "0", "--quiet"],
    }
    before = busy_neighbour(env) if neighbour == "before" else None
    try:
        if before is not None:
            time.sleep(2)
        return {name: timed(lines[name], env, checkout, late_s if neighbour == "late" else None)
                for name in commands}
    finally:
        stop(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("category", nargs="?", type=Path, default=SHARED / "hazelnut_toy")
    parser.add_argument("--checkout", type=Path, help="run another checkout's code (e.g. the version before a change)")
    parser.add_argument("--commands", default="train,predict",
                        help=f"comma-separated, of {', '.join(COMMANDS)} (predict needs train)")
    parser.add_argument("--neighbours", default="quiet,before,late", help=f"comma-separated, of {', '.join(NEIGHBOURS)}")
    parser.add_argument("--late", type=float, default=10.0, help="seconds after a command's start the late neighbour starts")
    parser.add_argument("--fit-steps", type=int, default=300, help="fit-defects training steps")
    args = parser.parse_args()
    commands = args.commands.split(",")
    neighbours = args.neighbours.split(",")
    unknown = sorted(set(commands) - set(COMMANDS)) + sorted(set(neighbours) - set(NEIGHBOURS))
    if unknown or "quiet" not in neighbours:
        parser.error(f"unknown choices {unknown}" if unknown else "the neighbours must include quiet (the ratios' base)")
    with tempfile.TemporaryDirectory() as folder:
        category = args.category.resolve()
        times = {name: measure(category, args.checkout, name, commands, args.late, args.fit_steps, Path(folder))
                 for name in neighbours}
    print(f"{args.category.name} ({args.checkout or 'this checkout'}), late neighbour after {args.late:.0f} s:")
    for step in commands:
        quiet = times["quiet"][step]
        others = ", ".join(f"neighbour {name} {times[name][step]:.0f} s (ratio {times[name][step] / quiet:.2f})"
                           for name in neighbours if name != "quiet")
        print(f"  {step}: quiet {quiet:.0f} s" + (f", {others}" if others else ""))


if __name__ == "__main__":
    main()
