"""Few-shot diffusion benchmark: do defects painted by a diffusion model learned from 3 real defects
per type help a detector find the other real defects?

    python -m benchmarks.diffusion ../shared/data/magnetic_tile

1. For each defect type of the category, ``--shots`` real defects (with masks) are drawn as the
   shots; every other test image stays for testing.
2. The from-scratch backend is trained on the shots and the normal training images (training time),
   then paints ``--n`` defects onto normal training images (seconds per image).
3. The feature-space detector is trained (a) with the classical generators only (CutPaste, NSA,
   DRAEM) and (b) with the same plus the diffusion defects; both are tested on the held-out real
   defects: image AUROC, pixel AUROC, pixel AP, AU-PRO.
4. The EAP of the diffusion defects against as many classical ones (scorer fitted on the normals).
5. A preview sheet: per defect type, the real shots next to generated defects (window crops).
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
from detectors.synthetic import make_generator, synthesise
from synth import ImageFiles, normal_image_paths
from synth.common.pictures import save_png, shots_sheet
from synth.diffusion import ScratchDefectDiffusion, split_shots
from synth.presets import guess_preset, preset_options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("category", type=Path)
    parser.add_argument("--shots", type=int, default=3, help="real defects per type used for training")
    parser.add_argument("--steps", type=int, default=2000, help="diffusion training steps")
    parser.add_argument("--n", type=int, default=400, help="diffusion defects to generate")
    parser.add_argument("--size", type=int, default=256, help="detector input size")
    parser.add_argument("--epochs", type=int, default=12, help="detector epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmark-diffusion"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict = {"category": args.category.name, "shots_per_defect": args.shots, "steps": args.steps}

    shots, held_out, bad = split_shots(args.category, args.shots, seed=args.seed)
    paths = normal_image_paths(args.category)
    normals_full = ImageFiles(paths)
    print(f"{len(shots)} shots of {sorted({s.defect for s in shots})}; {len(held_out)} test images held out", flush=True)

    generator = ScratchDefectDiffusion(train_steps=args.steps, seed=args.seed)
    model_dir = args.out / "model"
    if (model_dir / "generator.json").is_file():
        generator = ScratchDefectDiffusion.from_pretrained(model_dir)
        print(f"reusing the trained model in {model_dir}")
    else:
        generator.fit(shots, normals_full, checkpoint_dir=args.out / "checkpoint")
        generator.save_pretrained(model_dir)
    train_s = generator.fit_summary["train_seconds"]
    result |= {"diffusion_train_s": train_s, "diffusion_final_loss": generator.fit_summary["final_loss"]}
    print(f"diffusion training: {train_s:.0f} s for {args.steps} steps, final loss {generator.fit_summary['final_loss']:.4f}", flush=True)

    rng_order = np.random.default_rng(args.seed).permutation(len(paths))
    generated, types = [], []
    start = time.perf_counter()
    for i in range(args.n):
        image = normals_full[int(rng_order[i % len(paths)])]
        sample = generator(image, np.random.default_rng([args.seed, 7, i]))
        generated.append(sample)
        types.append(sample.params["defect"])
    per_image = (time.perf_counter() - start) / max(1, args.n)
    result["diffusion_s_per_image"] = round(per_image, 3)
    print(f"generated {args.n} diffusion defects: {per_image:.2f} s per image", flush=True)

    sheet = save_png(args.out / "preview.png", shots_sheet(shots, generated))
    print(f"preview sheet: {sheet}", flush=True)

    preset = guess_preset(args.category)
    normals = load_normals(args.category, SizeRule(args.size))
    test = load_test_set(args.category, normals.shape)
    keep_paths = {str(item.path) for item in held_out}
    keep = [i for i, p in enumerate(test.paths) if str(p) in keep_paths]
    test.images = [test.images[i] for i in keep]
    test.masks = [test.masks[i] for i in keep]
    test.labels = test.labels[keep]
    test.defects = [test.defects[i] for i in keep]
    test.paths = [test.paths[i] for i in keep]
    diffusion_anomalies = [Anomaly(resize_to(s.image, normals.shape), resize_to(s.mask, normals.shape)) for s in generated]

    options = preset_options(preset)
    for name, extra in (("classical", []), ("classical+diffusion", diffusion_anomalies)):
        detector = FeatureDiscriminator(image_size=args.size, epochs=args.epochs, seed=args.seed, synth_options=options)
        start = time.perf_counter()
        detector.fit(normals.images, extra, progress=False)
        fit_s = time.perf_counter() - start
        metrics = metrics_for(detector.predict(test.images), test)
        per_defect = {k: round(v, 4) for k, v in metrics.pop("image_auroc_per_defect").items()}
        pixel_per_defect = {k: round(v, 4) for k, v in metrics.pop("pixel_auroc_per_defect").items()}
        result[name] = {**{k: round(v, 4) for k, v in metrics.items()}, "per_defect": per_defect,
                        "pixel_per_defect": pixel_per_defect, "train_s": round(fit_s, 1),
                        "n_anomalies": detector.state_.get("n_anomalies")}
        print(
            f"{name:>20}: image AUROC {metrics['image_auroc']:.3f}  pixel AUROC {metrics['pixel_auroc']:.3f}"
            f"  pixel AP {metrics['pixel_ap']:.3f}  AU-PRO {metrics['au_pro']:.3f}  ({detector.state_.get('n_anomalies')}"
            f" training anomalies, {fit_s:.0f} s)  per defect {per_defect}",
            flush=True,
        )

    classical = synthesise(
        normals.images, make_generator("draem,nsa,cutpaste", options, normals.images), args.n, args.seed + 1, False
    )
    scorer = EAPScorer(seed=args.seed).fit(normals.images)
    eap_diffusion = scorer.score([a.image for a in diffusion_anomalies], [a.mask for a in diffusion_anomalies])
    eap_classical = scorer.score([a.image for a in classical], [a.mask for a in classical])
    by_defect = {}
    for defect in sorted(set(types)):
        values = [e for e, s in zip(eap_diffusion, generated) if s.params["defect"] == defect]
        by_defect[defect] = round(float(np.nanmean(values)), 4)
    valid_d, valid_c = eap_diffusion[~np.isnan(eap_diffusion)], eap_classical[~np.isnan(eap_classical)]
    labels = np.r_[np.ones(len(valid_d)), np.zeros(len(valid_c))]
    result["eap"] = {
        "diffusion_mean": round(float(valid_d.mean()), 4), "classical_mean": round(float(valid_c.mean()), 4),
        "diffusion_median": round(float(np.median(valid_d)), 4), "classical_median": round(float(np.median(valid_c)), 4),
        "auroc_diffusion_over_classical": round(auroc(np.r_[valid_d, valid_c], labels), 4), "diffusion_by_defect": by_defect,
    }
    print(f"EAP: diffusion mean {valid_d.mean():.3f} (median {np.median(valid_d):.3f}), classical mean {valid_c.mean():.3f}"
          f" (median {np.median(valid_c):.3f}); AUROC diffusion over classical {result['eap']['auroc_diffusion_over_classical']:.3f};"
          f" by defect {by_defect}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
