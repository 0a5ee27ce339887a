"""Inspection benchmark: does the threshold calibrated at training time (held-out normals and synthetic
anomalies, no real defect) hold on real parts? And how fast is ``predict``, and the exported ONNX model?

    python -m benchmarks.inspection                     # every category in ../shared/data
    python -m benchmarks.inspection ../shared/data/screw --target-fpr 0.05

Per category: ``anomalyforge train`` (default detector, seed 0), then ``anomalyforge predict`` on the
whole ``test/`` folder (from the files on disk to predictions.csv and one overlay per image). Prints
the stored threshold's real false-reject rate on ``test/good`` and recall on the defect folders next to
the target rate; for comparison only (never used), what thresholds picked on the real test set would
give (the one meeting the target rate on the real good images, and the real-F1-optimal one); and the
throughput of ``predict`` and of the ONNX model under onnxruntime (images/s, same images).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from anomalyforge.predict import predict_paths
from detectors import HybridDetector, load_detector
from detectors.calibration import f1_optimal_threshold
from detectors.export import export_onnx
from detectors.run_folder import train_run
from detectors.sizing import resize_to
from synth import read_image
from synth.presets import guess_preset, preset_options

from .shared_data import SHARED
from .shared_data import categories as categories_in


def rates(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    """(false-reject rate on good images, recall on defect images) of ``score > threshold``."""
    flagged = scores > threshold
    return float(flagged[labels == 0].mean()), float(flagged[labels == 1].mean())


def onnx_throughput(detector, model_path: Path, paths: list[Path], batch: int = 1) -> float:
    """Images per second of the ONNX model under onnxruntime, reading and resizing included (one image
    per run: a batch makes one large distance matrix and runs slower on a CPU)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_path))
    start = time.perf_counter()
    for k in range(0, len(paths), batch):
        images = np.stack([resize_to(read_image(p), detector.input_shape) for p in paths[k : k + batch]])
        session.run(None, {"images": images})
    return len(paths) / (time.perf_counter() - start)


def run(category: Path, target_fpr: float, work: Path) -> dict:
    preset = guess_preset(category)
    detector = HybridDetector(seed=0, synth_options=preset_options(preset))
    run_dir = work / category.name
    start = time.perf_counter()
    train_run(detector, category, run_dir, reference=False, progress=False, target_fpr=target_fpr)
    train_s = time.perf_counter() - start
    detector = load_detector(run_dir)
    report = predict_paths(detector, [category / "test"], work / f"{category.name}-predict", progress=False)
    with open(work / f"{category.name}-predict" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    paths = [Path(r["path"]) for r in rows]
    scores = np.array([float(r["score"]) for r in rows])
    labels = np.array([0 if p.parent.name == "good" else 1 for p in paths])
    calibration = detector.calibration
    frr, recall = rates(scores, labels, calibration["threshold"])
    frr_f1, recall_f1 = rates(scores, labels, calibration["threshold_f1"])
    good = np.sort(scores[labels == 0])
    oracle_target = float(np.quantile(good, 1 - target_fpr, method="higher"))  # on the real test set: comparison only
    oracle_f1, _ = f1_optimal_threshold(scores[labels == 0], scores[labels == 1])
    onnx_path = work / f"{category.name}.onnx"
    export_onnx(detector, onnx_path)
    return {
        "category": category.name, "n_good": int((labels == 0).sum()), "n_defect": int((labels == 1).sum()),
        "train_s": round(train_s, 1), "threshold": calibration["threshold"], "held_out_normals": calibration["n_normal"],
        "frr": frr, "recall": recall, "frr_f1_threshold": frr_f1, "recall_f1_threshold": recall_f1,
        "oracle_target_frr": rates(scores, labels, oracle_target)[0], "oracle_target_recall": rates(scores, labels, oracle_target)[1],
        "oracle_f1_frr": rates(scores, labels, oracle_f1)[0], "oracle_f1_recall": rates(scores, labels, oracle_f1)[1],
        "predict_images_per_s": report.images_per_second, "onnx_images_per_s": onnx_throughput(detector, onnx_path, paths),
        "input_shape": list(detector.input_shape),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("categories", nargs="*", type=Path, help=f"MVTec-layout categories (default: every one in {SHARED})")
    parser.add_argument("--target-fpr", type=float, default=0.01)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    categories = args.categories or categories_in()
    results = []
    with tempfile.TemporaryDirectory() as work:
        for category in categories:
            result = run(category, args.target_fpr, Path(work))
            results.append(result)
            print(json.dumps(result), flush=True)
            if args.json:
                args.json.write_text(json.dumps(results, indent=2) + "\n")
    pct = lambda v: f"{100 * v:5.1f}%"  # noqa: E731
    print(f"\ntarget false-reject rate {pct(args.target_fpr)}; calibrated = stored at training time (no real defect); "
          "real-set thresholds for comparison only")
    print(f"{'category':>14} {'calibrated FRR':>15} {'recall':>7} {'F1-thr FRR':>11} {'recall':>7} "
          f"{'real-target FRR':>16} {'recall':>7} {'real-F1 FRR':>12} {'recall':>7} {'predict img/s':>14} {'onnx img/s':>11}")
    for r in results:
        print(f"{r['category']:>14} {pct(r['frr']):>15} {pct(r['recall']):>7} {pct(r['frr_f1_threshold']):>11} "
              f"{pct(r['recall_f1_threshold']):>7} {pct(r['oracle_target_frr']):>16} {pct(r['oracle_target_recall']):>7} "
              f"{pct(r['oracle_f1_frr']):>12} {pct(r['oracle_f1_recall']):>7} {r['predict_images_per_s']:>14.1f} "
              f"{r['onnx_images_per_s']:>11.1f}")


if __name__ == "__main__":
    main()
