"""Fusion-weight ablation for the hybrid detector: how each head weight does on the real test split,
and which weight each selection rule picks from the synthetic validation alone.

    python -m benchmarks.fusion_weights                          # every shared category, 3 seeds
    python -m benchmarks.fusion_weights --categories screw --seeds 0

Each (category, seed) fits the default hybrid once, then scores the real test set with every weight
in its grid (image and pixel AUROC). Nothing here feeds back into training: the real test images only
show what a rule's choice costs. Rules: the default (the best mean validation AUROC within 0.002),
the knee of the mean curve at half (the default until 2026-12-05) and 3/4 of the best gain, the best
worst-generator within 0.002, and fixed weights. ``--json`` writes every run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from detectors import HybridDetector, Prediction
from detectors.data import load_normals, load_test_set
from detectors.evaluation import maps_at
from detectors.features import to_batch
from detectors.hybrid import choose_weight
from detectors.memory import nearest_maps
from detectors.metrics import auroc
from detectors.sizing import resize_to
from synth.presets import guess_preset, preset_options

from .shared_data import SHARED, category_names


def rules(weights: list[float]) -> dict:
    return {
        "best mean - 0.002 (default)": lambda c: choose_weight(weights, c.mean(0)),
        "knee 1/2 of mean (until 2026-12-05)": lambda c: choose_weight(weights, c.mean(0), 0.5, tolerance=0.0),
        "knee 3/4 of mean": lambda c: choose_weight(weights, c.mean(0), 0.75, tolerance=0.0),
        "best worst - 0.002": lambda c: choose_weight(weights, c.min(0)),
        "fixed 0 (memory alone)": lambda c: 0.0,
        "fixed 0.5": lambda c: 0.5,
    }


def sweep(category: Path, seed: int) -> dict:
    detector = HybridDetector(seed=seed, synth_options=preset_options(guess_preset(category)))
    normals = load_normals(category, detector.size_rule)
    test = load_test_set(category, normals.shape)
    detector.fit(normals.images, progress=False)
    with torch.no_grad():
        result = score_every_weight(detector, test)
    return {"category": category.name, "seed": seed, "weights": detector.fusion_weights, "test": result, "fusion": detector.state_["fusion"]}


def score_every_weight(detector: HybridDetector, test) -> dict:
    """Image and pixel AUROC on the test split for every weight of the detector's grid."""
    model = detector.model_.eval()
    memory, head, image_head = [], [], []
    for start in range(0, len(test.images), detector.batch_size):
        batch = [resize_to(np.asarray(image), detector.input_shape) for image in test.images[start : start + detector.batch_size]]
        patches = model.features(to_batch(batch, detector.input_shape))
        distance, residual = nearest_maps(patches, model.memory_bank)
        z_memory, z_head = model.standardised(distance, model.head_logits(patches, residual, distance))
        memory.append(z_memory)
        head.append(z_head)
        if model.image_head is not None:  # the image score's own head
            image_head.append(model.standardised_image_head(patches, residual, distance))
    memory, head = torch.cat(memory), torch.cat(head)
    image_head = torch.cat(image_head) if image_head else head
    masked = np.nonzero(test.has_mask)[0]
    target = np.concatenate([test.masks[i].ravel() > 0 for i in masked])
    result = {}
    for w in detector.fusion_weights:
        model.fusion_weights.fill_(w)
        scores, maps = [], []
        for start in range(0, len(memory), detector.batch_size):
            chunk = slice(start, start + detector.batch_size)
            s, m = detector.post_process(memory[chunk] + w * head[chunk], memory[chunk] + w * image_head[chunk])
            scores.append(s)
            maps.append(m[:, 0])
        prediction = maps_at(Prediction(torch.cat(scores).numpy(), torch.cat(maps).numpy()), test.masks[0].shape)
        scores, pixels = prediction.scores, np.concatenate([prediction.maps[i].ravel() for i in masked])
        result[w] = {"image": auroc(scores, test.labels), "pixel": auroc(pixels, target)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--categories", default=category_names())
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    runs = []
    for name in args.categories.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            run = sweep(args.data / name, seed)
            print(name, seed, {w: {k: round(v, 4) for k, v in r.items()} for w, r in run["test"].items()}, flush=True)
            runs.append(run)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    print(f"\n{'rule':>36} {'category':>14} {'image AUROC':>12} {'pixel AUROC':>12}  weights (image; map) per seed")
    for rule_name, rule in rules(runs[0]["weights"]).items():
        for name in args.categories.split(","):
            chosen = {"image": [], "pixel": []}
            for run in (r for r in runs if r["category"] == name):
                for metric, key in (("image", "image_auroc"), ("pixel", "pixel_auroc")):
                    curves = np.array([g[key] for g in run["fusion"]["per_generator"].values()])
                    w = rule(curves)
                    chosen[metric].append((w, run["test"][w][metric]))
            print(
                f"{rule_name:>36} {name:>14} {np.mean([v for _, v in chosen['image']]):12.4f} {np.mean([v for _, v in chosen['pixel']]):12.4f}"
                f"  {[w for w, _ in chosen['image']]}; {[w for w, _ in chosen['pixel']]}"
            )


if __name__ == "__main__":
    main()
