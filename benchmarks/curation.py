"""Curation benchmark: does the EAP tell good synthetic anomalies from useless ones, and does keeping
the high-EAP half train a better detector? (The protocol of Perini et al., on image anomalies.)

    python -m benchmarks.curation                          # every category in ../shared/data
    python -m benchmarks.curation ../shared/data/magnetic_tile --downstream-n 0

Per category:
1. An auxiliary set made from the normal training images, in three equal parts:
   good (CutPaste / NSA / DRAEM as the category's preset makes them), polluted (a normal image with a
   Perlin mask labelled anomalous, or a DRAEM blend at 2-5 % opacity: too faint to see), and noise
   (an image from another domain with a Perlin mask), in three equal sources: texture photos (Brodatz),
   scikit-image's embedded photos (people, animals, coins, the moon, cells, text, ...), and the
   training images of the other categories beside this one. Prints the AUROC of EAP for good against
   the rest, against each part and each noise source, the mean EAP per part, and the scoring throughput.
2. Downstream, for each seed: a generated set is scored, split at its median EAP, and the feature-space
   detector (trained on synthetic anomalies alone, so it depends most on their quality) is trained on
   the top half, on the top half of each generator (the generated mix kept), on the bottom half, and
   (a control of the same size) on a random half; no real defect
   is used in training. Prints real-defect image / pixel AUROC, pixel AP and AU-PRO on the category's
   test split for each, and their mean over the seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from curate.sample_scorer import EAPScorer
from detectors import FeatureDiscriminator
from detectors.base import Anomaly
from detectors.data import load_normals, load_test_set
from detectors.evaluation import metrics_for
from detectors.metrics import auroc
from detectors.sizing import SizeRule, resize_to
from detectors.synthetic import make_generator
from synth import DRAEM, TextureSource
from synth.base import to_rgb
from synth.common.options import parse_options
from synth.perlin import perlin_mask
from synth.presets import guess_preset, preset_options

from .shared_data import BRODATZ, categories

OTHER_PHOTOS = (
    "astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass", "gravel", "horse",
    "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket", "text",
)
NOISE_SOURCES = ("texture-photo", "other-photo", "other-category")


def perlin(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A non-empty DRAEM-style Perlin mask."""
    for _ in range(20):
        mask, _ = perlin_mask(shape, rng)
        if mask.sum() >= 16:
            return mask.astype(np.float32)
    return mask.astype(np.float32)


def rgb(image: np.ndarray) -> np.ndarray:
    """uint8 RGB from grey, RGBA or boolean images."""
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    return to_rgb(image[..., :3] if image.ndim == 3 else image)


def random_crop(image: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A crop of half to all of the short side, at the category's aspect ratio, resized to ``shape``."""
    h, w = image.shape[:2]
    aspect = shape[1] / shape[0]
    side = rng.uniform(0.5, 1.0)
    ch = int(min(h, w / aspect) * side)
    cw = max(1, int(ch * aspect))
    ch = max(1, ch)
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return resize_to(rgb(image[y : y + ch, x : x + cw]), shape)


def noise_images(category: Path, noise_textures: str, size: int) -> dict[str, list[np.ndarray]]:
    """Images from other domains, by source: texture photos, scikit-image's embedded photos, and the
    training images of the other categories beside ``category`` (none when it has no siblings)."""
    import skimage.data

    textures = TextureSource(noise_textures)
    siblings = [c for c in categories(category.parent) if c.resolve() != category.resolve()]
    others = []
    for sibling in siblings:
        others += load_normals(sibling, SizeRule(size), limit=40).images
    return {
        "texture-photo": [textures[i] for i in range(len(textures))],
        "other-photo": [getattr(skimage.data, name)() for name in OTHER_PHOTOS],
        "other-category": others,
    }


def auxiliary_set(normals, n: int, preset: str, textures: str | None, noise: dict[str, list[np.ndarray]], seed: int):
    """(image, mask, part, generator) tuples: n // 3 good, polluted and noise samples each; the noise
    part in equal shares of its sources."""
    rng = np.random.default_rng(seed)
    shape = normals[0].shape[:2]
    good_gen = make_generator("draem,nsa,cutpaste", preset_options(preset, textures), normals)
    faint = DRAEM(texture_dir=textures, opacity=(0.02, 0.05))
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
    sources = [name for name in NOISE_SOURCES if noise.get(name)]
    for i in range(third):
        source = sources[i % len(sources)]
        image = noise[source][int(rng.integers(len(noise[source])))]
        out.append((random_crop(image, shape, rng), perlin(shape, rng), "noise", source))
    return out


def separation(scores: np.ndarray, parts: np.ndarray, generators: np.ndarray) -> dict:
    """AUROC of EAP for good against the rest, against each part, and against each noise source."""
    good = parts == "good"

    def against(other: np.ndarray) -> float:
        chosen = good | other
        return auroc(scores[chosen], good[chosen].astype(int))

    out = {"good_vs_rest": against(~good)}
    for part in ("polluted", "noise"):
        out[f"good_vs_{part}"] = against(parts == part)
    for source in sorted(set(generators[parts == "noise"])):
        out[f"good_vs_{source}"] = against(generators == source)
    return out


def top_per_generator(scores: np.ndarray, generators: np.ndarray, size: int) -> np.ndarray:
    """The best ``size`` samples by EAP, each generator keeping its own top share (the mix of the
    generated set stays as it was): what ``select(top_fraction=0.5, per_generator=True)`` keeps, except
    that ``select`` rounds each generator's share up; here the remainders go to the largest fractions so
    the set has exactly ``size`` samples, the size of the other halves."""
    names = sorted(set(generators))
    shares = np.array([size * np.sum(generators == name) / len(scores) for name in names])
    keep = np.floor(shares).astype(int)
    keep[np.argsort(-(shares - keep), kind="stable")[: size - keep.sum()]] += 1  # largest remainders
    chosen = []
    for name, k in zip(names, keep):
        members = np.flatnonzero(generators == name)
        chosen += list(members[np.argsort(-scores[members], kind="stable")[:k]])
    return np.sort(np.array(chosen))


def downstream(normals, test, scores, anomalies, generators: np.ndarray, options: dict, seed: int) -> dict:
    order = np.argsort(-scores, kind="stable")
    half = len(order) // 2
    random_half = np.sort(np.random.default_rng(seed).permutation(len(order))[:half])
    halves = (("top half", order[:half]), ("top per generator", top_per_generator(scores, generators, half)),
              ("bottom half", order[-half:]), ("random half", random_half))
    results = {}
    for name, chosen in halves:
        detector = FeatureDiscriminator(synth="none", image_size=min(test.images[0].shape[:2]), seed=seed, **options)
        start = time.perf_counter()
        detector.fit(normals, [anomalies[i] for i in chosen], progress=False)
        train_s = time.perf_counter() - start
        metrics = metrics_for(detector.predict(test.images), test)
        results[name] = {
            "mean_eap": float(np.mean(scores[chosen])), "image_auroc": metrics["image_auroc"],
            "pixel_auroc": metrics["pixel_auroc"], "pixel_ap": metrics["pixel_ap"], "au_pro": metrics["au_pro"],
            "train_s": round(train_s, 1),
            "generators": {g: int(np.sum(generators[chosen] == g)) for g in sorted(set(generators))},
        }
        mix = ", ".join(f"{g} {k}" for g, k in results[name]["generators"].items())
        print(f"  seed {seed} {name:>17}: {mix}; mean EAP {results[name]['mean_eap']:.3f}  image AUROC {metrics['image_auroc']:.3f}"
              f"  pixel AUROC {metrics['pixel_auroc']:.3f}  pixel AP {metrics['pixel_ap']:.3f}"
              f"  AU-PRO {metrics['au_pro']:.3f}  (train {train_s:.0f} s)", flush=True)
    return results


def mean_over_seeds(runs: list[dict]) -> dict:
    keys = ("mean_eap", "image_auroc", "pixel_auroc", "pixel_ap", "au_pro")
    return {name: {k: float(np.mean([r[name][k] for r in runs])) for k in keys} for name in runs[0]}


def benchmark(category: Path, args) -> dict:
    normals = load_normals(category, SizeRule(args.size)).images
    preset = guess_preset(category)
    noise = noise_images(category, args.noise_textures, args.size)
    aux = auxiliary_set(normals, args.n, preset, args.textures, noise, args.seed)
    scorer = EAPScorer(image_size=args.size, seed=args.seed, **parse_options(args.scorer))
    start = time.perf_counter()
    scorer.fit(normals, progress=False)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = scorer.score([a[0] for a in aux], [a[1] for a in aux])
    score_s = time.perf_counter() - start
    parts = np.array([a[2] for a in aux])
    generators = np.array([a[3] for a in aux])
    result = {
        "category": category.name, "preset": preset, "n": len(aux), "scorer": scorer.get_config(),
        "auroc": separation(scores, parts, generators),
        "mean_eap": {p: float(np.mean(scores[parts == p])) for p in ("good", "polluted", "noise")},
        "mean_eap_by_generator": {g: float(np.mean(scores[generators == g])) for g in sorted(set(generators))},
        "fit_s": round(fit_s, 1), "score_s": round(score_s, 1), "samples_per_s": round(len(aux) / score_s, 1),
    }
    print(f"{category.name}: EAP AUROC good vs polluted+noise {result['auroc']['good_vs_rest']:.3f} on {len(aux)} samples")
    print("  AUROC good vs: " + ", ".join(f"{k[8:]} {v:.3f}" for k, v in result["auroc"].items() if k != "good_vs_rest"))
    print("  mean EAP: " + ", ".join(f"{k} {v:.3f}" for k, v in result["mean_eap"].items()))
    print("  by generator: " + ", ".join(f"{k} {v:.3f}" for k, v in result["mean_eap_by_generator"].items()))
    print(f"  fit {fit_s:.1f} s ({len(normals)} normal images); scoring {score_s:.1f} s = {result['samples_per_s']} samples/s", flush=True)

    if args.downstream_n:
        test = load_test_set(category, normals[0].shape[:2])
        generator = make_generator("draem,nsa,cutpaste", preset_options(preset, args.textures), normals)
        runs = []
        for seed in args.downstream_seeds:
            rng = np.random.default_rng([args.seed, seed, 1])
            anomalies, names = [], []
            while len(anomalies) < args.downstream_n:
                sample = generator(normals[int(rng.integers(len(normals)))], rng)
                if sample.mask.max() > 0:
                    anomalies.append(Anomaly(sample.image, sample.mask))
                    names.append(sample.generator)
            generated_scores = scorer.score([a.image for a in anomalies], [a.mask for a in anomalies])
            runs.append(downstream(normals, test, generated_scores, anomalies, np.array(names),
                                   parse_options(args.detector), seed))
        result["downstream"] = {"seeds": list(args.downstream_seeds), "runs": runs, "mean": mean_over_seeds(runs)}
        for name, row in result["downstream"]["mean"].items():
            print(f"  mean of {len(runs)} seeds, {name:>17}: image AUROC {row['image_auroc']:.3f}  pixel AUROC {row['pixel_auroc']:.3f}"
                  f"  pixel AP {row['pixel_ap']:.3f}  AU-PRO {row['au_pro']:.3f}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("categories", type=Path, nargs="*", help="MVTec-layout categories (default: every one in ../shared/data)")
    parser.add_argument("--textures", default=None, help="DRAEM's anomaly source textures (default: bundled)")
    parser.add_argument("--noise-textures", default=str(BRODATZ),
                        help="texture photos for the noise part (default: ../shared/data/textures/brodatz)")
    parser.add_argument("--n", type=int, default=600, help="auxiliary set size (three equal parts)")
    parser.add_argument("--downstream-n", type=int, default=600, help="generated set split in halves by EAP; 0 skips")
    parser.add_argument("--downstream-seeds", type=int, nargs="+", default=[0, 1], help="seeds of the downstream runs")
    parser.add_argument("--size", type=int, default=256, help="short side of the input (the size rule)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scorer", nargs="*", default=[], metavar="KEY=VALUE", help="EAPScorer options, e.g. k=5")
    parser.add_argument("--detector", nargs="*", default=[], metavar="KEY=VALUE", help="detector options, e.g. epochs=8")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = [benchmark(category, args) for category in (args.categories or categories())]
    print("\ncategory         AUROC good vs rest  vs polluted  vs noise   samples/s")
    for r in results:
        a = r["auroc"]
        print(f"{r['category']:<16} {a['good_vs_rest']:>18.3f} {a['good_vs_polluted']:>12.3f} {a['good_vs_noise']:>9.3f} {r['samples_per_s']:>11}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
