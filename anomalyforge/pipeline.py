"""Running a recipe: normals -> (few-shot defects) -> generate -> EAP curation -> train -> evaluate ->
report -> (publish), in one run folder.

Each step records in ``manifest.json`` a fingerprint of the recipe keys it reads and of the steps
before it. Running again skips a step whose fingerprint is unchanged and that finished; a step whose
inputs changed (e.g. ``--set train.epochs=5``) is done again, with every step after it. A step that
was interrupted resumes where its own work allows (generation and defect fitting continue from what
they wrote; scoring reuses stored scores).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from synth.common.files import link_file, write_atomic, write_json
from synth.common.random_streams import (
    RECIPE_HELD_OUT_ANOMALIES,
    RECIPE_HOLD_OUT,
    stream,
)
from synth.common.storage import check_output_folder

from .demo import DEMO_DATA
from .recipe import NOT_OUTPUT, dump_recipe, keys_read_by
from .run_context import RunContext

MANIFEST = "manifest.json"
RECIPE = "recipe.yaml"
METRICS = "metrics.json"


@dataclass
class Step:
    """One pipeline step: what it reads (recipe keys, earlier steps), the folders it owns, its work."""

    name: str
    after: tuple[str, ...]
    folders: tuple[str, ...]
    work: Callable[[RunContext], dict[str, Any]]
    wanted: Callable[[RunContext], bool] = lambda ctx: True

    @property
    def keys(self) -> tuple[str, ...]:
        """The recipe keys (or sections) that decide this step's output, as the schema says."""
        return keys_read_by(self.name)


@dataclass
class RunResult:
    root: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    off: list[str] = field(default_factory=list)

    @property
    def report(self) -> Path:
        return self.root / "report" / "index.html"

    @property
    def metrics(self) -> Path | None:
        path = self.root / METRICS
        return path if path.exists() else None


# -- steps ---------------------------------------------------------------------------------------
def step_normals(ctx: RunContext) -> dict[str, Any]:
    """The normal images: checked readable, split into training images and (when there is no real
    test split) a held-out share for the synthetic check. Demo data is laid out here first."""
    from tqdm.auto import tqdm

    from synth import ImageReadError, normal_image_paths, read_image

    data = ctx.recipe["data"]
    folder = ctx.root / "normals"
    folder.mkdir(parents=True, exist_ok=True)
    demo = DEMO_DATA.get(data["normals"])
    test = data["test"]
    if demo is not None:
        shutil.rmtree(folder / data["normals"], ignore_errors=True)  # what an interrupted attempt wrote
        source_root, demo_test = demo.write(folder / data["normals"], ctx.seed)
        test = test or (str(demo_test) if demo_test is not None else None)
    else:
        source_root = Path(data["normals"])
    paths = normal_image_paths(source_root)
    readable, skipped = [], {}
    for path in tqdm(paths, desc="check normals", unit="img", disable=not ctx.progress):
        try:
            read_image(path)
            readable.append(path)
        except ImageReadError as error:
            skipped[str(path)] = str(error)
            ctx.echo(f"  skipping unreadable image: {error}")
    if len(readable) < 2:
        raise ValueError(f"data.normals: {len(readable)} readable normal images in {source_root}; at least 2 are needed")
    holdout = data["holdout"] if test is None and ctx.recipe["evaluate"]["enabled"] else 0.0
    n_hold = min(len(readable) - 1, max(1, round(holdout * len(readable)))) if holdout > 0 else 0
    order = stream(ctx.seed, RECIPE_HOLD_OUT).permutation(len(readable))
    held = sorted(order[:n_hold].tolist())
    train = [readable[i] for i in sorted(order[n_hold:].tolist())]
    outputs: dict[str, Any] = {"source": str(source_root), "n_train": len(train), "n_holdout": n_hold,
                               "skipped_files": skipped, "test": test}
    if not held and not skipped:
        outputs.update(train=str(source_root), holdout=None)
        return outputs

    for part in ("train", "holdout"):  # links of an interrupted attempt
        shutil.rmtree(folder / part, ignore_errors=True)

    def name(path: Path) -> str:
        return path.relative_to(source_root).as_posix().replace("/", "__")

    for path in train:
        link_file(path, folder / "train" / name(path))
    for i in held:
        link_file(readable[i], folder / "holdout" / name(readable[i]))
    outputs.update(train=str(folder / "train"), holdout=str(folder / "holdout") if held else None)
    return outputs


def recipe_shots(ctx: RunContext) -> tuple[list, list, dict[str, str]]:
    """The few real defects of a few-shot recipe, drawn from ``fit_defects.data`` with the run's seed
    (the same draw for every step that needs them), the test images left, and the unreadable files."""
    from synth import split_shots

    fit = ctx.recipe["fit_defects"]
    return split_shots(fit["data"], fit["shots"], seed=ctx.seed, defects=fit["defects"])


def step_fit_defects(ctx: RunContext) -> dict[str, Any]:
    """Draw a few real defects per type and learn them with a diffusion model (few-shot recipes;
    ``backend: none`` draws them for the detector only)."""
    from synth.diffusion import fit_defects
    from synth.shots import defect_types

    fit = ctx.recipe["fit_defects"]
    if fit["backend"] == "none":
        shots, held_out, skipped = recipe_shots(ctx)
        return {"model": None, "defects": defect_types(shots), "shots": [str(s.source) for s in shots],
                "n_held_out": len(held_out), "skipped_files": skipped, "train_seconds": None}
    fitted = fit_defects(
        fit["data"], ctx.root / "defects", fit["backend"], fit["shots"], fit["defects"], ctx.train_dir, fit["options"],
        preset=ctx.recipe["data"]["preset"], seed=ctx.seed, preview=fit["preview"], progress=ctx.progress,
    )
    return {
        "model": str(fitted.out), "defects": list(fitted.generator.defects), "shots": [str(s.source) for s in fitted.shots],
        "n_held_out": len(fitted.held_out), "skipped_files": fitted.skipped,
        "train_seconds": fitted.generator.fit_summary.get("train_seconds"),
        "mixed_precision": fitted.generator.fit_summary.get("mixed_precision"),
    }


def build_mix(recipe: dict[str, Any], sources: Any, model: str | None = None):
    """The recipe's weighted mix of generators (``model``: a diffusion model fitted in this run)."""
    from synth import build_generator

    generators = recipe["generate"]["generators"]
    weights = {name: float(opts.get("weight", 1.0)) for name, opts in generators.items()}
    options = {name: {k: v for k, v in opts.items() if k != "weight"} for name, opts in generators.items() if weights[name] > 0}
    if "diffusion" in options and not options["diffusion"].get("model"):
        options["diffusion"]["model"] = model
    options["mix"] = {"p_unchanged": recipe["generate"]["p_unchanged"]}
    return build_generator("mix", sources, options, {k: w for k, w in weights.items() if w > 0})


def step_generate(ctx: RunContext) -> dict[str, Any]:
    from synth import ImageFiles, normal_image_paths
    from synth.dataset.generation import generate_dataset

    gen = ctx.recipe["generate"]
    paths = normal_image_paths(ctx.train_dir)
    generator = build_mix(ctx.recipe, ImageFiles(paths), ctx.outputs("fit_defects").get("model"))
    out = ctx.root / "generated"
    report = generate_dataset(
        paths, generator, gen["n"], out, seed=ctx.seed, fmt=gen["format"], workers=gen["workers"], shard_size=gen["shard_size"],
        input_root=ctx.train_dir, info={"license": ctx.recipe["data"]["license"]}, progress=ctx.progress,
        png_compression=gen["png_compression"], engine=gen["engine"], ray_address=gen["ray_address"],
    )
    made = report.written + report.already_done
    if made == 0:
        raise ValueError(f"generate: no sample could be made ({report.failed[:3]})")
    return {"dataset": str(out), "samples": made, "failed": report.failed, "skipped_files": report.bad_files}


def step_curate(ctx: RunContext) -> dict[str, Any]:
    from curate.curation_job import curate_dataset
    from curate.dataset_scores import load_scores
    from curate.sample_scorer import EAPScorer
    from curate.selection import SELECTION_OPTIONS

    cur = ctx.recipe["curate"]
    scorer = EAPScorer(**{"seed": ctx.seed, **cur["scorer"]})
    generated = Path(ctx.outputs("generate")["dataset"])
    stored = load_scores(generated)
    same_scorer = stored is not None and json.loads(json.dumps(stored.summary.get("scorer"))) == json.loads(
        json.dumps(scorer.get_config())
    )
    shutil.rmtree(ctx.root / "curated", ignore_errors=True)  # what an interrupted attempt wrote
    result = curate_dataset(
        generated, ctx.root / "curated", {k: cur[k] for k in SELECTION_OPTIONS}, scorer=scorer, normals=ctx.train_dir,
        rescore=not same_scorer, progress=ctx.progress, engine=cur["engine"], workers=ctx.recipe["generate"]["workers"],
        ray_address=cur["ray_address"],
    )
    return {
        "dataset": str(result.out), "kept": len(result.selection.kept), "dropped": len(result.selection.dropped),
        "dropped_by_reason": result.selection.reasons(), "report": str(result.report),
    }


def step_train(ctx: RunContext) -> dict[str, Any]:
    from detectors import detector_class
    from detectors.run_folder import train_detector

    train = dict(ctx.recipe["train"])
    kind, reference, target_fpr = train.pop("detector"), train.pop("reference"), train.pop("target_fpr")
    give_shots = train.pop("shots") and ctx.recipe["fit_defects"]["enabled"] and detector_class(kind).uses_shots
    # the curated (or generated) dataset is the training anomalies of a detector that learns from them
    anomalies = ctx.anomalies_dir if detector_class(kind).uses_anomalies else None
    shutil.rmtree(ctx.root / "detector", ignore_errors=True)  # what an interrupted attempt wrote
    info = train_detector(
        kind, ctx.train_dir, ctx.root / "detector", anomalies, {"seed": ctx.seed, **train}, preset=ctx.recipe["data"]["preset"],
        textures=ctx.recipe["generate"]["generators"].get("draem", {}).get("texture_dir"), reference=reference,
        progress=ctx.progress, target_fpr=target_fpr, shots=recipe_shots(ctx)[0] if give_shots else None,
    )
    if info is None:
        raise RuntimeError("recipes run in one process; use `anomalyforge train` under accelerate launch")
    return {"checkpoint": str(ctx.root / "detector" / "model"), "n_normal": info["n_normal"],
            "n_anomalies": info["n_ready_anomalies"], "train_seconds": info["train_seconds"],
            "reference_train_seconds": info.get("reference_train_seconds"), "calibration": info.get("calibration"),
            "fusion": info.get("fusion"), "n_shots": info.get("n_shots", 0),
            "reference": str(ctx.root / "detector" / "reference") if "reference" in info else None}


def holdout_test_set(ctx: RunContext, shape: tuple[int, int]):
    """The synthetic check when the data has no real defects: the held-out normal images, and
    anomalies the recipe's generators make on them (seeded apart from the training samples)."""
    from detectors.data import TestSet, load_normals
    from detectors.sizing import resize_mask_to, resize_to
    from synth import ImageFiles, normal_image_paths, read_image

    normals = load_normals(ctx.outputs("normals")["holdout"], shape)
    generator = build_mix(ctx.recipe, ImageFiles(normal_image_paths(ctx.train_dir)), ctx.outputs("fit_defects").get("model"))
    images, masks, labels, defects, paths = [], [], [], [], []
    for i, path in enumerate(normals.paths):
        images.append(normals.images[i])
        masks.append(np.zeros(shape, np.uint8))
        labels.append(0)
        defects.append("good")
        paths.append(path)
        original = read_image(path)
        for k in range(ctx.recipe["evaluate"]["holdout_anomalies"]):
            sample = generator(original, stream(ctx.seed, RECIPE_HELD_OUT_ANOMALIES, i, k))
            mask = resize_mask_to((sample.mask >= 0.5).astype(np.float32), shape)
            if not sample.is_anomalous or mask.max() == 0:
                continue
            images.append(resize_to(sample.image, shape))
            masks.append(mask)
            labels.append(1)
            defects.append(sample.generator)
            paths.append(Path(f"{Path(path).stem}_{sample.generator}_{k}.png"))
    return TestSet(images, masks, np.array(labels), defects, paths, normals.skipped)


def step_evaluate(ctx: RunContext) -> dict[str, Any]:
    from detectors import load_detector
    from detectors.data import load_test_set
    from detectors.evaluation import evaluate, summary_line

    trained = ctx.outputs("train")
    detector = load_detector(trained["checkpoint"])
    reference = load_detector(trained["reference"]) if trained.get("reference") else None
    test_folder = ctx.test_dir
    if test_folder:
        shots = ctx.outputs("fit_defects").get("shots", [])
        test = load_test_set(test_folder, detector.input_shape, exclude=shots, require_masks=False)
        kind = "real test split" + (f" (the {len(shots)} few-shot defects left out)" if shots else "")
    else:
        test = holdout_test_set(ctx, detector.input_shape)
        kind = "synthetic hold-out check"
    shutil.rmtree(ctx.root / "eval", ignore_errors=True)  # what an interrupted attempt wrote
    report = evaluate(detector, test, ctx.root / "eval", reference=reference, overlays=ctx.recipe["evaluate"]["overlays"],
                      progress=ctx.progress)
    report = {"evaluation": kind, "test_data": test_folder or ctx.outputs("normals")["holdout"], **report}
    write_json(ctx.root / METRICS, report)
    ctx.echo(f"  {summary_line(report)}")
    return {"metrics": str(ctx.root / METRICS), "evaluation": kind, "n_test": report["n_test"],
            "image_auroc": report["metrics"]["image_auroc"]}


REALISM_SAMPLES = 60  # generated defects per generator in the two-sample test against the shots


def shots_realism(ctx: RunContext) -> dict[str, Any] | None:
    """How far each generator's samples are from the recipe's real shots: the two-sample AUROC of
    their defect windows (``curate.realism``; 0.5: indistinguishable), on up to ``REALISM_SAMPLES``
    samples per generator spread over the generated dataset. None without shots. It chooses nothing."""
    if not ctx.outputs("fit_defects"):
        return None
    from curate.realism import realism_table
    from synth.dataset.manifest import Manifest, evenly_spaced
    from synth.dataset.reader import read_generated

    shots = recipe_shots(ctx)[0]
    if len(shots) < 2:  # a classifier needs two of each kind (a DefectShot's mask is never empty)
        return {"n_shots": len(shots), "samples": {}, "two_sample_auroc": None}
    generated = Path(ctx.outputs("generate")["dataset"])
    picks = {name: evenly_spaced(indices, REALISM_SAMPLES) for name, indices in Manifest(generated).indices_by_generator().items()}
    samples: dict[str, tuple[list, list]] = {name: ([], []) for name in picks}
    for sample in read_generated(generated, errors={}, indices={i for group in picks.values() for i in group}):
        images, masks = samples[sample.record["generator"]]
        images.append(sample.image)
        masks.append(sample.mask)
    table = realism_table([s.image for s in shots], [s.mask for s in shots], samples, seed=ctx.seed)
    return {"n_shots": len(shots), "samples": {name: sum(bool(np.any(m > 0)) for m in masks) for name, (_, masks) in sorted(samples.items())},
            "two_sample_auroc": dict(sorted(table.items()))}


def step_report(ctx: RunContext) -> dict[str, Any]:
    from .run_report import write_run_report

    realism = shots_realism(ctx)
    return {"report": str(write_run_report(ctx, realism)), "realism": realism}


def step_publish(ctx: RunContext) -> dict[str, Any]:
    from curate.publish import publish_dataset

    publish = ctx.recipe["publish"]
    url = publish_dataset(ctx.anomalies_dir, publish["repo"], private=publish["private"],
                          license=publish["license"] or ctx.recipe["data"]["license"])
    return {"url": url}


STEPS = (
    Step("normals", (), ("normals",), step_normals),
    Step("fit_defects", ("normals",), ("defects",), step_fit_defects, lambda ctx: ctx.recipe["fit_defects"]["enabled"]),
    Step("generate", ("normals", "fit_defects"), ("generated",), step_generate),
    Step("curate", ("generate",), ("curated",), step_curate, lambda ctx: ctx.recipe["curate"]["enabled"]),
    Step("train", ("curate", "generate"), ("detector",), step_train),
    Step("evaluate", ("train", "fit_defects"), ("eval", METRICS), step_evaluate,
         lambda ctx: ctx.recipe["evaluate"]["enabled"] and bool(ctx.test_dir or ctx.outputs("normals").get("holdout"))),
    Step("report", ("normals", "fit_defects", "generate", "curate", "train", "evaluate"), ("report",), step_report),
    Step("publish", ("curate", "generate"), (), step_publish, lambda ctx: ctx.recipe["publish"]["repo"] is not None),
)


# -- running -------------------------------------------------------------------------------------
def _lookup(recipe: dict[str, Any], dotted: str) -> Any:
    node: Any = recipe
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _output_keys(dotted: str, value: Any) -> Any:
    """A whole section without the keys that do not change the output (how many workers, which engine)."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if (dotted, k) not in NOT_OUTPUT}
    return value


def fingerprint(step: Step, recipe: dict[str, Any], prints: dict[str, str | None]) -> str:
    """A hash of the recipe keys a step reads and of the fingerprints of the steps before it."""
    content = {"keys": {k: _output_keys(k, _lookup(recipe, k)) for k in step.keys}, "after": {s: prints.get(s) for s in step.after}}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def open_run_folder(root: Path, recipe: dict[str, Any], source: str) -> dict[str, Any]:
    """The run folder's manifest (a new one for a new folder); refuses a folder that is not a run."""
    from . import __version__

    path = root / MANIFEST
    if check_output_folder(root, MANIFEST, "anomalyforge run"):
        manifest = json.loads(path.read_text())
    else:
        manifest = {"name": recipe["name"], "steps": {}, "runs": []}
    manifest.update(anomalyforge=__version__, recipe=RECIPE, source=source)
    return manifest


def run_recipe(
    recipe: dict[str, Any],
    out: str | Path,
    source: str = "<recipe>",
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> RunResult:
    """Run a validated recipe (:func:`~anomalyforge.recipe.load_recipe`) in the run folder ``out``:
    finished steps with unchanged inputs are skipped, the rest run in order."""
    root = Path(out).resolve()  # the manifest's paths stay valid from any working folder
    manifest = open_run_folder(root, recipe, source)
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(root / RECIPE, dump_recipe(recipe).encode())
    ctx = RunContext(recipe, root, manifest, progress, echo)
    result = RunResult(root)
    invocation = {"started": _now(), "ran": result.ran, "skipped": result.skipped}
    manifest["runs"].append(invocation)
    prints: dict[str, str | None] = {}

    def save() -> None:
        write_json(root / MANIFEST, manifest)

    for number, step in enumerate(STEPS, 1):
        label = f"[{number}/{len(STEPS)}] {step.name}"
        if not step.wanted(ctx):
            echo(f"{label}: off in this recipe, skipped")
            prints[step.name] = None
            manifest["steps"][step.name] = {"status": "off"}
            result.off.append(step.name)
            continue
        prints[step.name] = fingerprint(step, recipe, prints)
        entry = manifest["steps"].get(step.name, {})
        owned = [root / f for f in step.folders]
        if entry.get("status") == "done" and entry.get("fingerprint") == prints[step.name] and all(p.exists() for p in owned):
            echo(f"{label}: done before, skipped")
            result.skipped.append(step.name)
            continue
        if entry.get("fingerprint") != prints[step.name]:
            for path in owned:  # its inputs changed: start this step afresh
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        resuming = entry.get("status") in ("running", "interrupted") and entry.get("fingerprint") == prints[step.name]
        echo(f"{label}{' (resuming)' if resuming else ''}")
        entry = manifest["steps"][step.name] = {"status": "running", "fingerprint": prints[step.name], "started": _now()}
        save()
        start = time.perf_counter()
        try:
            entry["outputs"] = step.work(ctx)
        except KeyboardInterrupt:
            entry["status"] = "interrupted"
            invocation["finished"] = _now()
            save()
            raise
        except Exception as error:
            entry.update(status="failed", error=f"{type(error).__name__}: {error}")
            invocation["finished"] = _now()
            save()
            raise
        entry.update(status="done", seconds=round(time.perf_counter() - start, 1), finished=_now())
        result.ran.append(step.name)
        save()
    invocation["finished"] = _now()
    save()
    return result
