"""Detection benchmark: the normal-only kNN reference against detectors trained on synthetic anomalies
only (no real defect is used in training), on MVTec-layout categories.

    python benchmarks/detection.py ../shared/data/magnetic_tile ../shared/data/hazelnut_toy

Prints, per category and detector: image AUROC / AP / F1-max, pixel AUROC / AP, AU-PRO, training wall
time and inference milliseconds per image (batched, and one image at a time); writes JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anomalyforge.cli import parse_overrides  # noqa: E402
from detectors import detector_class  # noqa: E402
from detectors.data import load_normals, load_test_set  # noqa: E402
from detectors.evaluation import metrics_for  # noqa: E402
from detectors.synthetic import synth_options_for  # noqa: E402


def run(category: Path, kind: str, size: int, options: dict, preset: str) -> dict:
    normals = load_normals(category, size)
    test = load_test_set(category, size)
    if kind != "knn" and "synth_options" not in options:
        options = {**options, "synth_options": synth_options_for(preset)}
    detector = detector_class(kind)(image_size=size, **options)
    start = time.perf_counter()
    detector.fit(normals.images, progress=False)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    prediction = detector.predict(test.images)
    batched_ms = 1000 * (time.perf_counter() - start) / len(test.images)
    singles = []
    for image in test.images[:20]:
        start = time.perf_counter()
        detector.predict([image])
        singles.append(1000 * (time.perf_counter() - start))
    metrics = metrics_for(prediction, test)
    per_defect = {k: round(v, 4) for k, v in metrics.pop("image_auroc_per_defect").items()}
    return {
        "category": category.name, "detector": kind, "n_train": len(normals.images), "n_test": len(test.images),
        **{k: round(v, 4) for k, v in metrics.items()}, "image_auroc_per_defect": per_defect,
        "train_s": round(train_s, 1), "infer_ms_batched": round(batched_ms, 1),
        "infer_ms_single": round(float(np.median(singles)), 1), "threads": torch.get_num_threads(),
        "config": detector.get_config(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("categories", nargs="+", type=Path)
    parser.add_argument("--detectors", default="knn,feature")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--preset", default="auto", choices=["auto", "object", "texture"],
                        help="synthetic anomalies for objects or textures; auto: object when the border is uniform")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="detector options, e.g. epochs=5")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from detectors.data import guess_preset

    results = []
    for category in args.categories:
        preset = guess_preset(category) if args.preset == "auto" else args.preset
        for kind in args.detectors.split(","):
            options = parse_overrides(args.set) if kind != "knn" else {}
            result = run(category, kind, args.size, options, preset)
            result["preset"] = preset
            results.append(result)
            print(
                f"{result['category']:>14} {kind:>8}  image AUROC {result['image_auroc']:.3f}  AP {result['image_ap']:.3f}"
                f"  F1 {result['image_f1_max']:.3f}  pixel AUROC {result['pixel_auroc']:.3f}  pixel AP {result['pixel_ap']:.3f}"
                f"  AU-PRO {result['au_pro']:.3f}  train {result['train_s']:.0f} s  infer {result['infer_ms_batched']:.0f} ms/img"
                f" (single {result['infer_ms_single']:.0f} ms)  per defect {result['image_auroc_per_defect']}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
