"""The Ray engine against the local engine on this machine: generation and EAP scoring.

    python -m benchmarks.distributed [--data DIR] [--n 2000] [--score-n 400] [--workers 2] [--repeat 3]
                                     [--only generate|score]

Generation: ``--n`` mix samples (CutPaste, NSA, DRAEM) at 256x256 written in each format by the local
engine with ``--workers`` processes and by a local Ray with ``--workers`` CPUs, in alternating
(paired) runs; samples/s, the ratio Ray / local, and whether the two outputs are byte-identical.
Ray is timed twice: already running (what a long-lived cluster costs) and started and stopped by
the job (what a one-off local run costs). Scoring: the EAP of ``--score-n`` samples, fitted once,
scored locally (torch on every core) and on Ray tasks (one core each). Input: 256x256 resizes of
``DIR/train/good`` (default ``../shared/data/magnetic_tile`` when present, else the bundled demo
tiles). Outputs go to ``$TMPDIR`` (``/dev/shm`` gives steadier figures than a disk).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .generation import prepare_inputs  # the same inputs as the generation benchmark
from .shared_data import SHARED


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def timed_generation(paths, n: int, out: Path, fmt: str, workers: int, engine: str) -> float:
    from synth import ImageFiles, build_generator
    from synth.dataset import generate_dataset

    generator = build_generator("mix", sources=ImageFiles(paths))
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    start = time.perf_counter()
    report = generate_dataset(paths, generator, n, out, seed=0, fmt=fmt, workers=workers, progress=False, engine=engine)
    seconds = time.perf_counter() - start
    assert report.written == n, report.failed[:3]
    return n / seconds


def generation(paths, n: int, workers: int, repeat: int, tmp: Path) -> None:
    import ray

    for fmt in ("mvtec", "hf"):
        local, warm, cold = [], [], []
        for _ in range(repeat):
            local.append(timed_generation(paths, n, tmp / "local", fmt, workers, "local"))
            cold.append(timed_generation(paths, n, tmp / "ray-cold", fmt, workers, "ray"))
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            try:
                warm.append(timed_generation(paths, n, tmp / "ray", fmt, workers, "ray"))
            finally:
                ray.shutdown()
        same = folder_bytes(tmp / "local") == folder_bytes(tmp / "ray") == folder_bytes(tmp / "ray-cold")
        ratios = [w / l for w, l in zip(warm, local)]
        print(
            f"generate {n} mix samples, {fmt}, {workers} workers: local {statistics.median(local):.1f} samples/s, "
            f"Ray (running) {statistics.median(warm):.1f}, Ray (started by the job) {statistics.median(cold):.1f}; "
            f"Ray / local {statistics.median(ratios):.2f} (median of {repeat} paired runs: "
            f"{', '.join(f'{r:.2f}' for r in ratios)}); outputs byte-identical: {same}",
            flush=True,
        )


def scoring(paths, n: int, workers: int, tmp: Path) -> None:
    import numpy as np
    import ray

    from curate import EAPScorer, score_dataset
    from synth import ImageFiles, build_generator
    from synth.dataset import generate_dataset

    dataset = tmp / "to-score"
    shutil.rmtree(dataset, ignore_errors=True)
    generate_dataset(paths, build_generator("mix", sources=ImageFiles(paths)), n, dataset, seed=0, progress=False)
    copy = tmp / "to-score-ray"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(dataset, copy)
    start = time.perf_counter()
    local = score_dataset(dataset, EAPScorer(), progress=False, report=False)
    local_s = time.perf_counter() - start
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        start = time.perf_counter()
        distributed = score_dataset(copy, EAPScorer(), progress=False, report=False, engine="ray", workers=workers)
        ray_s = time.perf_counter() - start
    finally:
        ray.shutdown()
    a, b = local.eap(), distributed.eap()
    finite = [k for k in a if np.isfinite(a[k])]
    gap = max(abs(a[k] - b[k]) for k in finite) if finite else float("nan")
    print(f"score {n} samples (fit on {len(paths)} normals included): local {local_s:.1f} s, Ray {workers} workers "
          f"{ray_s:.1f} s, Ray / local speed {local_s / ray_s:.2f}; largest EAP difference {gap:.2g}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "magnetic_tile")
    parser.add_argument("--n", type=int, default=2000, help="samples per generation run")
    parser.add_argument("--score-n", type=int, default=400, help="samples scored (0: skip scoring)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=("generate", "score"), default=None, help="run one part")
    args = parser.parse_args()
    if importlib.util.find_spec("ray") is None:
        sys.exit('this benchmark needs Ray: pip install -e ".[ray]"')
    from synth import list_images

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare_inputs(args.data if args.data.exists() else None, tmp / "inputs")
        paths = list_images(tmp / "inputs")
        print(f"inputs: {len(paths)} images at 256x256 from {args.data if args.data.exists() else 'the demo tiles'}; "
              f"{os.cpu_count()} CPUs", flush=True)
        if args.only != "score":
            generation(paths, args.n, args.workers, args.repeat, tmp)
        if args.score_n and args.only != "generate":
            scoring(paths, args.score_n, args.workers, tmp)


if __name__ == "__main__":
    main()
