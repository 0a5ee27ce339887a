"""Generation start-up, end-to-end speed against anomalib, throughput and memory at 256x256.

    python -m benchmarks.generation [--data DIR] [--n 400] [--anomalib-python PATH] [--textures DIR] [--no-sweep]

Start-up: wall time of ``python -c "import synth"`` and ``anomalyforge --help`` (median of 5) beside
a bare ``python -c pass``. End to end, pinned to one core (``taskset -c 0``) and start-up included:
``anomalyforge generate --generator draem --textures DIR --n 240 --format mvtec`` against anomalib's
``make_synthetic_dataset`` on the same 240 images with the same texture folder, run by the Python of a
separate venv that has anomalib (``--anomalib-python`` or ``$ANOMALIB_PYTHON``; it needs torchvision,
which breaks this project's CPU torch, so never install it here; the row is skipped without it).
Throughput: 2,000 DRAEM samples written in the MVTec layout by one worker on one core.

Sweep (unless ``--no-sweep``):
per generator (NSA with its object and texture presets): images/s of the generator alone on one core (OpenCV and BLAS limited to one
thread), then the whole ``generate`` job writing each format with 1 and 2 worker processes (in the
environment a user has: no thread variables), with the peak resident memory of the main process and
of the largest worker. Input: 256x256 resizes of
``DIR/train/good`` (default ``../shared/data/magnetic_tile`` when present, else the bundled demo tiles).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .shared_data import BRODATZ, PROJECT, SHARED

ANOMALIB_JOB = """
import sys
from pathlib import Path

import pandas as pd
from anomalib.data.utils.synthetic import make_synthetic_dataset

inputs, out = Path(sys.argv[1]), Path(sys.argv[2])
frame = pd.DataFrame({"image_path": sorted(str(p) for p in inputs.glob("*.png")), "label": "normal",
                      "label_index": 0, "mask_path": "", "split": "train"})
(out / "images").mkdir(parents=True)
(out / "masks").mkdir()
made = make_synthetic_dataset(frame, out / "images", out / "masks", anomalous_ratio=1.0)
print(int((made.label_index == 1).sum()))
"""


CLI = str(Path(sys.executable).parent / "anomalyforge")
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")


def one_core() -> list[str]:
    return ["taskset", "-c", "0"] if shutil.which("taskset") else []


def wall(command: list[str], cwd: Path | None = None) -> float:
    os.sync()  # the previous run's files go to disk now, not during this one
    start = time.perf_counter()
    subprocess.run(one_core() + command, cwd=cwd, env=ONE_THREAD, check=True, capture_output=True)
    return time.perf_counter() - start


def startup() -> None:
    rows = {"python -c pass": [sys.executable, "-c", "pass"], "python -c 'import synth'": [sys.executable, "-c", "import synth"],
            "anomalyforge --help": [CLI, "--help"]}
    for label, command in rows.items():
        times = sorted(wall(command, PROJECT) for _ in range(5))
        print(f"start-up  {label:28s} {times[2]:6.2f} s (median of 5)")


def versus_anomalib(inputs: Path, textures: Path, anomalib_python: str | None, tmp: Path, repeat: int) -> None:
    """Both jobs ``repeat`` times, alternating (this machine's timings drift); medians and the median ratio."""
    n = len(list(inputs.glob("*.png")))
    have_anomalib = bool(anomalib_python) and Path(anomalib_python).exists()
    work = tmp / "anomalib"
    if have_anomalib:
        (work / "datasets").mkdir(parents=True)
        (work / "datasets" / "dtd").symlink_to(textures.resolve())  # make_synthetic_dataset reads ./datasets/dtd
        (work / "job.py").write_text(ANOMALIB_JOB)
    ours, theirs = [], []
    for k in range(repeat):
        ours.append(wall([CLI, "generate", "--input", str(inputs), "--generator", "draem", "--textures", str(textures),
                          "--n", str(n), "--format", "mvtec", "--workers", "1", "--quiet", "--out", str(tmp / f"ours{k}")]))
        if have_anomalib:
            theirs.append(wall([anomalib_python, "job.py", str(inputs), str(work / f"out{k}")], cwd=work))
    mine = statistics.median(ours)
    print(f"end to end, {n} images 256 px, one core: anomalyforge generate {mine:.2f} s ({n / mine:.1f} samples/s; "
          f"runs {', '.join(f'{t:.2f}' for t in ours)})")
    if not have_anomalib:
        print("end to end: anomalib row skipped (no --anomalib-python / $ANOMALIB_PYTHON)")
        return
    ratios = [t / o for t, o in zip(theirs, ours)]
    print(f"end to end: anomalib make_synthetic_dataset {statistics.median(theirs):.2f} s (runs "
          f"{', '.join(f'{t:.2f}' for t in theirs)}); anomalyforge is {statistics.median(ratios):.2f}x faster "
          f"(median of {repeat} paired runs; {', '.join(f'{r:.2f}' for r in ratios)})")


def throughput(inputs: Path, textures: Path, repeat: int, n: int = 2000) -> None:
    args = ("job", "draem", str(inputs), str(n), "mvtec", "1", str(textures))
    rates = [run_case(*args, pinned=True)["images_per_s"] for _ in range(repeat)]
    print(f"throughput: {n} DRAEM samples, MVTec layout, 1 worker on one core: {statistics.median(rates):.1f} samples/s "
          f"(median of {repeat}: {', '.join(f'{r:.1f}' for r in rates)})")


GENERATORS = ["cutpaste", "nsa", "nsa-texture", "draem", "mix"]


def make_generator(name: str, sources, textures: str = ""):
    from synth import build_generator

    options = {"draem": {"texture_dir": textures}} if textures else {}
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
        cv2.imwrite(str(folder / f"{k:03d}.png"), cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)[..., ::-1])


def case(kind: str, generator: str, inputs: Path, n: int, fmt: str = "", workers: int = 1, textures: str = "") -> dict:
    """One measurement, run in a fresh process so that memory figures are its own."""
    import cv2
    import numpy as np

    from synth import ImageFiles, list_images, read_image
    from synth.dataset import generate_dataset

    cv2.setNumThreads(1)
    paths = list_images(inputs)
    gen = make_generator(generator, ImageFiles(paths), textures)
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


def run_case(*args: str, pinned: bool = False, one_thread: bool = True) -> dict:
    """One measurement in a fresh process (``pinned``: to one core; the worker sweep uses both).
    ``one_thread``: BLAS and OpenMP limited to one thread through the environment; without it, the
    environment a user has (the job limits its worker processes itself)."""
    os.sync()
    command = (one_core() if pinned else []) + [sys.executable, "-m", "benchmarks.generation", "--case", *args]
    out = subprocess.run(command, capture_output=True, text=True, env=ONE_THREAD if one_thread else None, check=True,
                         cwd=PROJECT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "magnetic_tile")
    parser.add_argument("--n", type=int, default=400, help="images per measurement")
    parser.add_argument("--textures", type=Path, default=BRODATZ, help="DRAEM texture folder (default: shared Brodatz)")
    parser.add_argument("--anomalib-python", default=os.environ.get("ANOMALIB_PYTHON"),
                        help="python of a separate venv with anomalib, for the end-to-end comparison")
    parser.add_argument("--no-sweep", action="store_true", help="only start-up, end to end and throughput")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the end-to-end and throughput measurements (median)")
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        kind, generator, inputs, n, fmt, workers, *textures = args.case
        print(json.dumps(case(kind, generator, Path(inputs), int(n), fmt, int(workers), *textures)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        startup()
        inputs = Path(tmp) / "inputs"
        prepare_inputs(args.data, inputs, count=240)
        print(f"inputs: {len(list(inputs.iterdir()))} images 256x256 from {args.data if args.data.exists() else 'demo tiles'}")
        textures = args.textures if args.textures.is_dir() else None
        if textures is None:
            print(f"no texture folder at {args.textures}: end-to-end and throughput rows skipped")
        else:
            versus_anomalib(inputs, textures, args.anomalib_python, Path(tmp), args.repeat)
            throughput(inputs, textures, args.repeat)
        if args.no_sweep:
            return
        print(f"{'generator':10s} {'what':22s} {'img/s':>8s} {'peak main MB':>13s} {'peak worker MB':>15s}")
        for generator in GENERATORS:
            rows = [("1 core, no writing", run_case("core", generator, str(inputs), str(args.n), "-", "1"))]
            for fmt in ("mvtec", "hf"):
                for workers in (1, 2):
                    label = f"write {fmt}, {workers} worker{'s' if workers > 1 else ''}"
                    rows.append((label, run_case("job", generator, str(inputs), str(args.n), fmt, str(workers), one_thread=False)))
            for label, r in rows:
                print(f"{generator:10s} {label:22s} {r['images_per_s']:8.1f} {r['peak_main_mb']:13.0f} {r['peak_worker_mb']:15.0f}")


if __name__ == "__main__":
    main()
