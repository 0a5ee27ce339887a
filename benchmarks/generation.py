"""Generation throughput and memory at 256x256.

    python benchmarks/generation.py [--data DIR] [--n 400]

Per generator (NSA with its object and texture presets): images/s of the generator alone on one core (OpenCV and BLAS limited to one
thread), then the whole ``generate`` job writing each format with 1 and 2 worker processes, with the
peak resident memory of the main process and of the largest worker. Input: 256x256 resizes of
``DIR/train/good`` (default ``../shared/data/magnetic_tile`` when present, else the bundled demo tiles).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATORS = ["cutpaste", "nsa", "nsa-texture", "draem", "mix"]


def make_generator(name: str, sources):
    from synth import build_generator

    options = {"draem": {"texture_dir": os.environ["TEXTURES"]}} if os.environ.get("TEXTURES") else {}
    if name == "nsa-texture":
        name, options = "nsa", {**options, "nsa": {"preset": "texture"}}
    return build_generator(name, sources=sources, options=options)


def prepare_inputs(data: Path | None, folder: Path, count: int = 64) -> None:
    import cv2

    from anomalyforge.demo import demo_images
    from synth import normal_image_paths, read_image

    folder.mkdir(parents=True, exist_ok=True)
    if data is not None and data.exists():
        images = [read_image(p) for p in normal_image_paths(data)[:count]]
    else:
        images = list(demo_images().values())
    for k, image in enumerate(images):
        cv2.imwrite(str(folder / f"{k:03d}.png"), cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA))


def case(kind: str, generator: str, inputs: Path, n: int, fmt: str = "", workers: int = 1) -> dict:
    """One measurement, run in a fresh process so that memory figures are its own."""
    import cv2
    import numpy as np

    from curate import generate_dataset
    from synth import ImageFiles, list_images, read_image

    cv2.setNumThreads(1)
    paths = list_images(inputs)
    gen = make_generator(generator, ImageFiles(paths))
    if kind == "core":
        images = [read_image(p) for p in paths]
        for k in range(10):  # warm-up: caches, lazy imports
            gen(images[k % len(images)], np.random.default_rng(k))
        start = time.perf_counter()
        for k in range(n):
            gen(images[k % len(images)], np.random.default_rng(k))
        seconds = time.perf_counter() - start
    else:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            generate_dataset(paths, gen, n, Path(tmp) / "out", seed=0, fmt=fmt, workers=workers, progress=False)
            seconds = time.perf_counter() - start
    return {
        "images_per_s": n / seconds,
        "peak_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def run_case(*args: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, __file__, "--case", *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile")
    parser.add_argument("--n", type=int, default=400, help="images per measurement")
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        kind, generator, inputs, n, fmt, workers = args.case
        print(json.dumps(case(kind, generator, Path(inputs), int(n), fmt, int(workers))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs"
        prepare_inputs(args.data, inputs)
        print(f"inputs: {len(list(inputs.iterdir()))} images 256x256 from {args.data if args.data.exists() else 'demo tiles'}")
        print(f"{'generator':10s} {'what':22s} {'img/s':>8s} {'peak main MB':>13s} {'peak worker MB':>15s}")
        for generator in GENERATORS:
            rows = [("1 core, no writing", run_case("core", generator, str(inputs), str(args.n), "-", "1"))]
            for fmt in ("mvtec", "hf"):
                for workers in (1, 2):
                    label = f"write {fmt}, {workers} worker{'s' if workers > 1 else ''}"
                    rows.append((label, run_case("job", generator, str(inputs), str(args.n), fmt, str(workers))))
            for label, r in rows:
                print(f"{generator:10s} {label:22s} {r['images_per_s']:8.1f} {r['peak_main_mb']:13.0f} {r['peak_worker_mb']:15.0f}")


if __name__ == "__main__":
    main()
