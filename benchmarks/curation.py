"""Curation benchmark: does the EAP tell good synthetic anomalies from useless ones, and does keeping
the high-EAP half train a better detector? (The protocol of Perini et al., on image anomalies.)

    python benchmarks/curation.py ../shared/data/magnetic_tile

1. An auxiliary set made from the normal training images, in three equal parts:
   good (CutPaste / NSA / DRAEM as the category's preset makes them), polluted (a normal image with a
   Perlin mask labelled anomalous, or a DRAEM blend at 2-5 % opacity: too faint to see), and noise
   (a texture photo from another domain with a Perlin mask). Prints the AUROC of EAP for good
   against the rest, the mean EAP per part, and the scoring throughput.
2. Downstream: a generated set is scored, split at its median EAP, and the feature-space detector is
   trained on the top half, on the bottom half, and (a control of the same size) on a random half;
   no real defect is used in training. Prints real-defect image / pixel AUROC, pixel AP and AU-PRO
   on the category's test split for each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anomalyforge.cli import parse_overrides  # noqa: E402
from curate.scorer import EAPScorer  # noqa: E402
from detectors import FeatureDiscriminator  # noqa: E402
from detectors.base import Anomaly  # noqa: E402
from detectors.data import guess_preset, load_normals, load_test_set  # noqa: E402
from detectors.evaluation import metrics_for  # noqa: E402
from detectors.metrics import auroc  # noqa: E402
from detectors.sizing import SizeRule, resize_to  # noqa: E402
from detectors.synthetic import make_generator, synth_options_for  # noqa: E402
from synth import DRAEM, TextureSource  # noqa: E402
from synth.perlin import perlin_mask  # noqa: E402


def perlin(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A non-empty DRAEM-style Perlin mask."""
    for _ in range(20):
        mask, _ = perlin_mask(shape, rng)
        if mask.sum() >= 16:
            return mask.astype(np.float32)
    return mask.astype(np.float32)


def auxiliary_set(
    normals: list[np.ndarray], n: int, preset: str, textures: str | None, noise_textures: str | None, seed: int
):
    """(image, mask, part, generator) tuples: n // 3 good, polluted and noise samples each."""
    rng = np.random.default_rng(seed)
    shape = normals[0].shape[:2]
    good_gen = make_generator("draem,nsa,cutpaste", synth_options_for(preset, textures), normals)
    faint = DRAEM(texture_dir=textures, opacity=(0.02, 0.05))
    noise_source = TextureSource(noise_textures)
    out = []
    third = n // 3
    while sum(1 for s in out if s[2] == "good") < third:
        image = normals[int(rng.integers(len(normals)))]
        sample = good_gen(image, rng)
        if sample.mask.max() > 0:
            out.append((sample.image, sample.mask, "good", sample.generator))
    for i in range(third):
        image = normals[int(rng.integers(len(normals)))]
        if i % 2 == 0:
            out.append((image, perlin(shape, rng), "polluted", "normal-labelled-anomalous"))
        else:
            sample = faint(image, rng)
            out.append((sample.image, sample.mask, "polluted", "faint-draem"))
    for _ in range(third):
        texture, _ = noise_source.sample(rng)
        h, w = texture.shape[:2]
        crop = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        patch = texture[y : y + crop, x : x + crop]
        patch = cv2.cvtColor(patch, cv2.COLOR_GRAY2RGB) if patch.ndim == 2 else patch
        out.append((resize_to(patch, shape), perlin(shape, rng), "noise", "texture-photo"))
    return out


def downstream(normals, test, scores, anomalies, options: dict) -> dict:
    order = np.argsort(-scores, kind="stable")
    half = len(order) // 2
    random_half = np.sort(np.random.default_rng(0).permutation(len(order))[:half])
    results = {}
    for name, chosen in (("top half", order[:half]), ("bottom half", order[-half:]), ("random half", random_half)):
        detector = FeatureDiscriminator(synth="none", image_size=min(test.images[0].shape[:2]), **options)
        start = time.perf_counter()
        detector.fit(normals, [anomalies[i] for i in chosen], progress=False)
        train_s = time.perf_counter() - start
        metrics = metrics_for(detector.predict(test.images), test)
        results[name] = {
            "mean_eap": float(np.mean(scores[chosen])), "image_auroc": metrics["image_auroc"],
            "pixel_auroc": metrics["pixel_auroc"], "pixel_ap": metrics["pixel_ap"], "au_pro": metrics["au_pro"],
            "train_s": round(train_s, 1),
        }
        print(f"  {name:>11}: mean EAP {results[name]['mean_eap']:.3f}  image AUROC {metrics['image_auroc']:.3f}"
              f"  pixel AUROC {metrics['pixel_auroc']:.3f}  pixel AP {metrics['pixel_ap']:.3f}"
              f"  AU-PRO {metrics['au_pro']:.3f}  (train {train_s:.0f} s)", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("category", type=Path)
    parser.add_argument("--textures", default=None, help="DRAEM's anomaly source textures (default: bundled)")
    parser.add_argument("--noise-textures", default=str(Path(__file__).resolve().parents[2] / "shared/data/textures/brodatz"),
                        help="texture photos for the noise part (default: ../shared/data/textures/brodatz)")
    parser.add_argument("--n", type=int, default=600, help="auxiliary set size (three equal parts)")
    parser.add_argument("--downstream-n", type=int, default=600, help="generated set split in halves by EAP; 0 skips")
    parser.add_argument("--size", type=int, default=256, help="short side of the input (the size rule)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scorer", nargs="*", default=[], metavar="KEY=VALUE", help="EAPScorer options, e.g. k=5")
    parser.add_argument("--detector", nargs="*", default=[], metavar="KEY=VALUE", help="detector options, e.g. epochs=8")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    normals = load_normals(args.category, SizeRule(args.size)).images
    preset = guess_preset(args.category)
    aux = auxiliary_set(normals, args.n, preset, args.textures, args.noise_textures, args.seed)
    scorer = EAPScorer(image_size=args.size, seed=args.seed, **parse_overrides(args.scorer))
    start = time.perf_counter()
    scorer.fit(normals, progress=False)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = scorer.score([a[0] for a in aux], [a[1] for a in aux])
    score_s = time.perf_counter() - start
    parts = np.array([a[2] for a in aux])
    generators = np.array([a[3] for a in aux])
    result = {
        "category": args.category.name, "preset": preset, "n": len(aux), "scorer": scorer.get_config(),
        "auroc_good_vs_rest": auroc(scores, (parts == "good").astype(int)),
        "mean_eap": {p: float(np.mean(scores[parts == p])) for p in ("good", "polluted", "noise")},
        "mean_eap_by_generator": {g: float(np.mean(scores[generators == g])) for g in sorted(set(generators))},
        "fit_s": round(fit_s, 1), "score_s": round(score_s, 1), "samples_per_s": round(len(aux) / score_s, 1),
    }
    print(f"{args.category.name}: EAP AUROC good vs polluted+noise {result['auroc_good_vs_rest']:.3f} on {len(aux)} samples")
    print("  mean EAP: " + ", ".join(f"{k} {v:.3f}" for k, v in result["mean_eap"].items()))
    print("  by generator: " + ", ".join(f"{k} {v:.3f}" for k, v in result["mean_eap_by_generator"].items()))
    print(f"  fit {fit_s:.1f} s ({len(normals)} normal images); scoring {score_s:.1f} s = {result['samples_per_s']} samples/s", flush=True)

    if args.downstream_n:
        rng = np.random.default_rng(args.seed + 1)
        generator = make_generator("draem,nsa,cutpaste", synth_options_for(preset, args.textures), normals)
        anomalies = []
        while len(anomalies) < args.downstream_n:
            sample = generator(normals[int(rng.integers(len(normals)))], rng)
            if sample.mask.max() > 0:
                anomalies.append(Anomaly(sample.image, sample.mask))
        start = time.perf_counter()
        generated_scores = scorer.score([a.image for a in anomalies], [a.mask for a in anomalies])
        print(f"downstream: {len(anomalies)} generated anomalies scored in {time.perf_counter() - start:.1f} s")
        test = load_test_set(args.category, normals[0].shape[:2])
        result["downstream"] = downstream(normals, test, generated_scores, anomalies, parse_overrides(args.detector))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
