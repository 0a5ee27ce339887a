"""The cost of a busy machine: ``anomalyforge train`` and ``predict`` on one category alone and
beside one other CPU-bound process (a numpy loop), as ratios to the quiet time.

    python -m benchmarks.threads                                # hazelnut_toy in ../shared/data
    python -m benchmarks.threads ../shared/data/screw --checkout ../other-clone   # another version's code

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


def timed(command: list[str], env: dict[str, str], cwd: Path | None) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def measure(category: Path, checkout: Path | None, busy: bool, work: Path) -> dict[str, float]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OMP_", "MKL_", "OPENBLAS_"))}
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout.resolve())
    cli = [sys.executable, "-m", "anomalyforge.cli"]
    neighbour = None
    if busy:
        neighbour = subprocess.Popen([sys.executable, "-c", BUSY],
                                     env={**env, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
        time.sleep(2)
    try:
        run = work / ("busy" if busy else "quiet")
        train = timed([*cli, "train", "--data", str(category), "--out", str(run), "--no-reference", "--quiet"], env, checkout)
        predict = timed([*cli, "predict", "--model", str(run), "--input", str(category / "test"), "--out", str(run / "pred"),
                         "--quiet"], env, checkout)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    return {"train": train, "predict": predict}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("category", nargs="?", type=Path, default=SHARED / "hazelnut_toy")
    parser.add_argument("--checkout", type=Path, help="run another checkout's code (e.g. the version before a change)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        category = args.category.resolve()
        quiet = measure(category, args.checkout, False, Path(folder))
        busy = measure(category, args.checkout, True, Path(folder))
    print(f"{args.category.name} ({args.checkout or 'this checkout'}):")
    for step in ("train", "predict"):
        print(f"  {step}: quiet {quiet[step]:.0f} s, beside a busy process {busy[step]:.0f} s, "
              f"ratio {busy[step] / quiet[step]:.2f}")


if __name__ == "__main__":
    main()
