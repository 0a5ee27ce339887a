"""Few-shot benchmark: do K real defects per type make the default detector (the hybrid) better?

    python -m benchmarks.few_shot                                   # every shared category, K = 0,1,3,5, seeds 0,1,2
    python -m benchmarks.few_shot ../shared/data/magnetic_tile --shots 0,3 --seeds 0
    python -m benchmarks.few_shot ../shared/data/screw --ingredients transplant --realism
    python -m benchmarks.few_shot --shots 3 --seeds 0 --ingredients "" --realism --realism-diffusion 2000

Per category and seed:

1. ``max(K)`` real defects of each type are drawn as shots (``synth.split_shots``); the shots of a
   smaller K are the first K of them. Every shot of the largest K is left out of the test, so
   every row is scored on the same test images (``--leave-out K``: the shots of that K instead,
   so that a run of fewer K scores the same test images as a full run).
2. K = 0 is the default hybrid, trained on its own synthetic anomalies only (zero-shot).
3. For K > 0, each ingredient is a row: ``fit-shots`` (the shots given to the hybrid's ``fit``, as a
   user's are: it transplants them in two halves and validates its fusion weights on them too;
   see ``detectors.hybrid``), ``fit-shots-no-memory`` (the same without the memory of the shots'
   defect patches in the image score, ``detectors.defect_memory``: its ablation), ``transplant``
   (the shots' defects moved onto the normal training images by :class:`synth.DefectTransplant`,
   as many as one classical generator makes), ``transplant-halves`` (the same, with the shots dealt
   into two halves as the hybrid deals them (``synth.shots.shot_halves``), whose transplants the
   hybrid sees as two generators: its fusion weights are then chosen on transplants of shots
   the validated head did not see), ``shots`` (the shots themselves as training positives of the
   head; they never choose a fusion weight or the threshold: they have no held-out part), and
   ``transplant+shots``, and ``diffusion`` (the from-scratch diffusion backend fitted on the shots
   paints as many defects; its fit's seconds are printed; not in the default rows: slow on a CPU)
   and ``diffusion+fit-shots`` (both: the few-shot diffusion recipe with the shots given to ``fit``).
4. Image AUROC, pixel AUROC, pixel AP and AU-PRO on the real test split, the fit's and the
   prediction's seconds.
5. ``--realism``: the classifier two-sample test (``curate.realism``) of each generator's defects
   against the held-out real defects (seed 0, the largest K's shots): 0.5 = indistinguishable.
   ``--realism-diffusion 2000`` adds the diffusion backend fitted for that many steps (its fit's
   seconds are printed: the few-shot recipe's cost); ``--ingredients ""`` skips the detector rows.

Nothing is chosen on the test images: every option is the default.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from detectors import HybridDetector
from detectors.base import Anomaly, shot_at
from detectors.data import TestSet, load_normals, load_test_set
from detectors.evaluation import metrics_for
from detectors.synthetic import make_generator, synthesise
from synth import DefectShot, DefectTransplant, split_shots
from synth.common.saved import MIXED_PRECISIONS
from synth.presets import preset_options, resolve_preset
from synth.shots import shot_halves

from .shared_data import SHARED
from .shared_data import categories as categories_in

METRICS = ("image_auroc", "pixel_auroc", "pixel_ap", "au_pro")
INGREDIENTS = ("fit-shots", "fit-shots-no-memory", "transplant", "transplant-halves", "shots", "transplant+shots", "diffusion", "diffusion+fit-shots")
CLASSICAL = ("cutpaste", "nsa", "draem")


def first_shots(shots: list[DefectShot], k: int) -> list[DefectShot]:
    """The first ``k`` shots of each type (the shots of a smaller K are among a larger K's)."""
    out, seen = [], {}
    for shot in shots:
        seen[shot.defect] = seen.get(shot.defect, 0) + 1
        if seen[shot.defect] <= k:
            out.append(shot)
    return out


def transplant_generator(shots: list[DefectShot], preset: str) -> DefectTransplant:
    return DefectTransplant(shots, **preset_options(preset)["transplant"])


def transplants(images, shots: list[DefectShot], preset: str, count: int, seed: int, halves: bool) -> list[Anomaly]:
    """``count`` transplanted defects; with ``halves``, the shots are dealt into two halves as the
    hybrid deals them (``synth.shots.shot_halves``), whose transplants are two generators to the
    hybrid, so that its fusion weights are chosen on transplants of shots its head did not see."""
    parts = shot_halves(shots) if halves else [shots]
    out = []
    for index, part in enumerate(parts):
        made = synthesise(images, transplant_generator(part, preset), count // len(parts), seed + 1 + index, False)
        name = f"transplant-{'ab'[index]}" if len(parts) > 1 else "transplant"
        out += [Anomaly(a.image, a.mask, name, a.source) for a in made]
    return out


_DIFFUSION_FITS: dict[tuple, object] = {}


def fitted_diffusion(images, shots: list[DefectShot], preset: str, seed: int, steps: int, precision: str = "auto"):
    """The from-scratch diffusion backend fitted on the shots with its defaults (``steps`` training
    steps in mixed ``precision``); its fit's seconds are printed. Fitted once per seed, shots, steps
    and precision: the realism table and the detector rows share it."""
    from synth import ScratchDefectDiffusion

    key = (preset, seed, steps, precision, tuple(s.source for s in shots), len(images))
    if key not in _DIFFUSION_FITS:
        generator = ScratchDefectDiffusion(train_steps=steps, seed=seed, mixed_precision=precision,
                                           **preset_options(preset)["diffusion"])
        generator.fit(shots, images, progress=False)
        print(f"  diffusion: fit {generator.fit_summary['train_seconds']:.0f} s ({steps} steps, {generator.fit_summary['mixed_precision']}, {len(shots)} shots, "
              f"last loss {generator.fit_summary.get('final_loss') or float('nan'):.4f})", flush=True)
        _DIFFUSION_FITS[key] = generator
    return _DIFFUSION_FITS[key]


def painted(images, shots: list[DefectShot], preset: str, count: int, seed: int, steps: int) -> list[Anomaly]:
    """``count`` defects painted by the from-scratch diffusion backend fitted on the shots."""
    generator = fitted_diffusion(images, shots, preset, seed, steps)
    start = time.perf_counter()
    made = synthesise(images, generator, count, seed + 3, False)
    print(f"  diffusion: painting {(time.perf_counter() - start) / max(1, count):.2f} s per defect", flush=True)
    return made


def fit_and_score(
    images, anomalies, test: TestSet, preset: str, seed: int, size: int, shots: list[DefectShot] | None = None, **options,
) -> dict:
    detector = HybridDetector(image_size=size, seed=seed, synth_options=preset_options(preset), **options)
    start = time.perf_counter()
    detector.fit(images, anomalies, progress=False, shots=shots)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    prediction = detector.predict(test.images)
    predict_s = time.perf_counter() - start
    metrics = metrics_for(prediction, test)
    per_defect = {k: round(v, 4) for k, v in metrics.pop("image_auroc_per_defect").items()}
    pixel_per_defect = {k: round(v, 4) for k, v in metrics.pop("pixel_auroc_per_defect").items()}
    return {**{k: round(float(metrics[k]), 4) for k in METRICS}, "per_defect": per_defect, "pixel_per_defect": pixel_per_defect,
            "fit_s": round(fit_s, 1), "predict_s": round(predict_s, 1), "fusion": detector.state_["fusion"]["chosen"], "selection": detector.state_["fusion"],
            "n_anomalies": len(anomalies)}


def diffusion_fit_spec(text: str) -> tuple[int, str]:
    """``STEPS`` or ``STEPS:PRECISION`` (``--realism-diffusion``) -> training steps, mixed precision."""
    steps, _, precision = text.partition(":")
    if not steps.isdigit() or precision not in ("", *MIXED_PRECISIONS):
        raise ValueError(f"--realism-diffusion {text!r}: expected STEPS or STEPS:PRECISION, PRECISION one of "
                         f"{', '.join(MIXED_PRECISIONS)}")
    return int(steps), precision or "auto"


def realism(
    images, shots: list[DefectShot], real: TestSet, preset: str, seed: int, n: int,
    diffusion_fits: dict[str, tuple[int, str]] | None = None,
) -> dict[str, float]:
    """Two-sample AUROC of each generator's defect windows against the real test defects' windows
    (with ``diffusion_fits``, ``{"STEPS[:PRECISION]": (steps, precision)}`` from
    :func:`diffusion_fit_spec`, of the diffusion backend fitted so too)."""
    from curate.realism import realism_table

    defective = [i for i in range(len(real.images)) if real.labels[i] == 1]
    options = preset_options(preset)
    generators = {name: make_generator(name, options, images) for name in CLASSICAL}
    generators["transplant"] = transplant_generator(shots, preset)
    for text, (steps, precision) in (diffusion_fits or {}).items():
        generators[f"diffusion-{text.replace(':', '-')}"] = fitted_diffusion(images, shots, preset, seed, steps, precision)
    made = {name: synthesise(images, generator, n, seed + 101, False) for name, generator in generators.items()}
    return realism_table([real.images[i] for i in defective], [real.masks[i] for i in defective],
                         {name: ([a.image for a in m], [a.mask for a in m]) for name, m in made.items()}, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("categories", nargs="*", type=Path, help=f"MVTec-layout categories (default: every one in {SHARED})")
    parser.add_argument("--shots", default="0,1,3,5", help="K values: real defects per type (0: zero-shot)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--leave-out", type=int, default=None, help="real defects per type drawn and left out of the test "
                        "(default: the largest K), so that a run of fewer K scores the same test images as a full one")
    parser.add_argument("--ingredients", default="fit-shots,fit-shots-no-memory,transplant,transplant-halves,shots,transplant+shots",
                        help=f"rows for K > 0, from {', '.join(INGREDIENTS)}")
    parser.add_argument("--diffusion-steps", type=int, default=2000, help="training steps of the diffusion backend")
    parser.add_argument("--size", type=int, default=256, help="short side of the detector's input")
    parser.add_argument("--shot-share", type=float, default=None, help="the hybrid's shot_share in the fit-shots rows "
                        "(default: the hybrid's default)")
    parser.add_argument("--realism", action="store_true", help="also the two-sample test of each generator")
    parser.add_argument("--realism-n", type=int, default=120, help="generated defects per generator in the test")
    parser.add_argument("--realism-diffusion", default="", help="the diffusion fits in the realism test, as STEPS or "
                        "STEPS:PRECISION (mixed_precision), e.g. 2000 or 2000,4000 or 2000:no,2000:bf16 (each fit takes "
                        "minutes on a CPU; none by default)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ks = sorted({int(k) for k in args.shots.split(",")})
    leave_out = max(ks) if args.leave_out is None else args.leave_out
    if leave_out < max(ks):
        parser.error(f"--leave-out {leave_out} is fewer than the largest K ({max(ks)})")
    ingredients = [name for name in args.ingredients.split(",") if name]  # none: the realism table alone
    unknown = set(ingredients) - set(INGREDIENTS)
    if unknown:
        parser.error(f"unknown ingredients {sorted(unknown)}; choose from {', '.join(INGREDIENTS)}")
    try:
        diffusion_fits = {text: diffusion_fit_spec(text) for text in args.realism_diffusion.split(",") if text}
    except ValueError as error:
        parser.error(str(error))
    results: list[dict] = []
    realism_rows: dict[str, dict] = {}
    for category in args.categories or categories_in():
        preset = resolve_preset("auto", category)
        for seed in (int(s) for s in args.seeds.split(",")):
            drawn, _, _ = split_shots(category, leave_out, seed=seed)
            normals = load_normals(category, HybridDetector(image_size=args.size).size_rule)
            test = load_test_set(category, normals.shape, exclude=[s.source for s in drawn])
            shots = [shot_at(shot, normals.shape) for shot in drawn]  # the scale the normal and test images are seen at
            print(f"{category.name} seed {seed}: {len(normals.images)} normals {normals.shape}, {len(drawn)} shots drawn, "
                  f"{len(test.images)} test images ({int(test.labels.sum())} defects)", flush=True)
            if args.realism and seed == 0 and leave_out > 0:
                realism_rows[category.name] = realism(normals.images, shots, test, preset, seed, args.realism_n, diffusion_fits)
                print(f"  two-sample AUROC (0.5: like real): {realism_rows[category.name]}", flush=True)
                save(args.json, results, realism_rows)
            count = HybridDetector().anomalies_per_image * len(normals.images) // len(CLASSICAL)  # as one classical generator makes
            for k in ks:
                chosen = first_shots(shots, k)
                painted_defects: list[Anomaly] | None = None  # painted once per K, for every diffusion row
                for ingredient in (["zero-shot"] if k == 0 else ingredients):
                    anomalies: list[Anomaly] = []
                    if "transplant" in ingredient:
                        anomalies += transplants(normals.images, chosen, preset, count, seed, ingredient == "transplant-halves")
                    if ingredient.startswith("diffusion"):
                        if painted_defects is None:
                            painted_defects = painted(normals.images, chosen, preset, count, seed, args.diffusion_steps)
                        anomalies += painted_defects
                    if ingredient in ("shots", "transplant+shots"):
                        anomalies += [Anomaly(s.image, s.mask.astype(np.float32), "real") for s in chosen]
                    given = chosen if "fit-shots" in ingredient else None
                    options = {"shot_share": args.shot_share} if given and args.shot_share is not None else {}
                    if ingredient == "fit-shots-no-memory":
                        options["defect_memory"] = False
                    row = fit_and_score(normals.images, anomalies, test, preset, seed, args.size, given, **options)
                    row.update(category=category.name, seed=seed, k=k, ingredient=ingredient)
                    results.append(row)
                    print(f"  K={k} {ingredient:>16}: " + "  ".join(f"{m} {row[m]:.4f}" for m in METRICS)
                          + f"  fit {row['fit_s']:.0f} s  predict {row['predict_s']:.1f} s  fusion {row['fusion']}", flush=True)
                    save(args.json, results, realism_rows)
    print()
    print(table(results))
    if realism_rows:
        print("\ntwo-sample AUROC of each generator's defects against real ones (0.5: indistinguishable)")
        names = list(next(iter(realism_rows.values())))
        print(f"{'category':>14} " + " ".join(f"{n:>11}" for n in names))
        for category, row in realism_rows.items():
            print(f"{category:>14} " + " ".join(f"{row[n]:>11.3f}" for n in names))


def save(path: Path | None, results: list[dict], realism_rows: dict[str, dict]) -> None:
    """Everything measured so far, rewritten after each row: an interrupted run keeps its rows."""
    if path:
        path.write_text(json.dumps({"runs": results, "realism": realism_rows}, indent=2) + "\n")


def table(results: list[dict]) -> str:
    """Mean over seeds per category, K and ingredient."""
    lines = [f"{'category':>14} {'K':>2} {'ingredient':>16} {'seeds':>5} " + " ".join(f"{m:>11}" for m in METRICS) + "   fit s"]
    keys = sorted({(r["category"], r["k"], r["ingredient"]) for r in results})
    for category, k, ingredient in keys:
        runs = [r for r in results if (r["category"], r["k"], r["ingredient"]) == (category, k, ingredient)]
        lines.append(f"{category:>14} {k:>2} {ingredient:>16} {len(runs):>5} "
                     + " ".join(f"{np.mean([r[m] for r in runs]):>11.4f}" for m in METRICS)
                     + f" {np.mean([r['fit_s'] for r in runs]):>7.0f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
