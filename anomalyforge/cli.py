"""The ``anomalyforge`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from synth.common.threads import use_threads
from synth.presets import AUTO

from . import __version__

PRESET_HELP = ("where anomalies go: object keeps them on the object (background estimated from the image border), "
               "texture anywhere; auto (default): object when the normal images' border is uniform")
SKIPPED_EXIT = 3  # predict --strict: some input files could not be read (the others were scored)


def _weights(text: str) -> dict[str, float]:
    from synth.registry import parse_weights

    try:
        return parse_weights(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def _open_probability(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {value}")
    return value


def generator_options(args: argparse.Namespace) -> dict[str, dict]:
    """Per-generator keyword arguments from the generate options (the preset's, then the command's own)."""
    from synth.presets import preset_options, resolve_preset

    own = {
        "cutpaste": {"variant": args.variant} if args.variant else {}, "nsa": {"label_mode": args.label_mode}, "draem": {},
        "diffusion": {"model": args.model, "defect": args.defect},
    }
    presets = preset_options(resolve_preset(args.preset, args.input), args.textures)
    options = {name: {**presets[name], **mine, "p_unchanged": args.p_unchanged}
               for name, mine in own.items()}
    return {**options, "mix": {"p_unchanged": args.p_unchanged}}


def cmd_generate(args: argparse.Namespace) -> int:
    from synth import ImageFiles, build_generator, normal_image_paths
    from synth.common.storage import as_location
    from synth.dataset.generation import generate_dataset

    paths = normal_image_paths(args.input)
    root = as_location(args.input)  # sources are recorded relative to the folder given (train/good/x.png)
    options = generator_options(args)
    uses_diffusion = args.generator == "diffusion" or (args.generator == "mix" and (args.weights or {}).get("diffusion", 0) > 0)
    if uses_diffusion and not args.model:
        raise ValueError("the diffusion generator needs --model DIR (a folder written by anomalyforge fit-defects)")
    if not uses_diffusion:
        options.pop("diffusion")
    if args.generator != "mix":
        options = {args.generator: options[args.generator]}
    generator = build_generator(args.generator, sources=ImageFiles(paths), options=options, weights=args.weights)
    report = generate_dataset(
        paths, generator, args.n, args.out, seed=args.seed, fmt=args.format, workers=args.workers,
        shard_size=args.shard_size, input_root=root, info={"license": args.license}, progress=not args.quiet,
        png_compression=args.png_compression, engine=args.engine, ray_address=args.ray_address,
    )
    print(
        f"wrote {report.written} samples to {report.out} ({report.already_done} were already there"
        f"{f', {len(report.failed)} failed' if report.failed else ''}"
        f"{f', {len(report.bad_files)} unusable input files skipped (unreadable or too small)' if report.bad_files else ''})"
    )
    if args.preview:
        sheet = write_preview(args.out, Path(args.out) / "preview.png", 24, 4, 160)
        print(f"preview sheet: {sheet}")
    return 1 if report.failed else 0


def write_preview(dataset: str | Path, out: str | Path, n: int, columns: int, tile: int) -> Path:
    from synth.common.pictures import contact_sheet, mask_overlay, save_png
    from synth.dataset.reader import read_generated

    panels = []
    for sample in read_generated(dataset, limit=n):
        record = sample.record
        variant = record["params"].get("variant", "") if isinstance(record["params"], dict) else ""
        caption = f"#{record['index']} {record['generator']} {variant}".strip()
        panels.append(([sample.image, mask_overlay(sample.image, sample.mask)], caption))
    return save_png(out, contact_sheet(panels, columns=columns, tile=tile))


def cmd_preview(args: argparse.Namespace) -> int:
    out = args.out or Path(args.dataset) / "preview.png"
    print(f"preview sheet: {write_preview(args.dataset, out, args.n, args.columns, args.tile)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from synth import ImageFiles, build_generator
    from synth.dataset.generation import generate_dataset
    from synth.presets import preset_options
    from synth.registry import DEFAULT_MIX

    from .demo import write_demo_images

    out = Path(args.out)
    paths = write_demo_images(out / "normal")
    options = {name: opts for name, opts in preset_options("texture").items() if name in DEFAULT_MIX}
    generator = build_generator("mix", sources=ImageFiles(paths), options=options)
    report = generate_dataset(
        paths, generator, args.n, out / "dataset", seed=args.seed, fmt="hf", workers=args.workers,
        input_root=out / "normal", info={"license": "BSD-3-Clause (scikit-image sample data)"}, progress=not args.quiet,
    )
    sheet = write_preview(out / "dataset", out / "preview.png", 24, 4, 160)
    print(f"demo: {len(paths)} normal images in {out / 'normal'}; {report.written + report.already_done} samples "
          f"in {out / 'dataset'} (hub-ready folder)\npreview sheet: {sheet}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from detectors import detector_class
    from detectors.calibration import threshold_basis
    from detectors.hybrid import describe_fusion
    from detectors.run_folder import train_detector
    from synth.common.options import checked_options, parse_options
    from synth.dataset.layout import generated_input_folder, is_generated_dataset

    data = Path(args.data)
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data} is not a folder")
    anomalies_dir = Path(args.anomalies) if args.anomalies else None
    normals_dir = data
    if is_generated_dataset(data):
        anomalies_dir = anomalies_dir or data
        normals_dir = Path(args.normals or generated_input_folder(data))
        if not normals_dir.is_dir():
            raise FileNotFoundError(f"{data}: its normal images ({normals_dir}) are gone; pass --normals DIR")
    options = checked_options(detector_class(args.detector), parse_options(args.set), f"{args.detector} detector")
    for name in ("epochs", "seed", "device"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    options.update(image_size=args.size, aspect=args.aspect)
    shots = None
    if args.shots_from:
        from synth import split_shots

        shots, _, _ = split_shots(args.shots_from, args.shots, seed=options.get("seed", 0))
        print(f"{len(shots)} real defects from {args.shots_from}: keep them out of the test set "
              f"({', '.join(Path(s.source).name for s in shots[:5])}{', ...' if len(shots) > 5 else ''})")
    info = train_detector(
        args.detector, normals_dir, args.out, anomalies_dir, options, synth=args.synth, preset=args.preset,
        textures=args.textures, reference=not args.no_reference, progress=not args.quiet, target_fpr=args.target_fpr,
        shots=shots,
    )
    if info is None:  # under `accelerate launch`, one process writes the run
        return 0
    skipped = f"; {len(info['skipped_files'])} unusable files skipped (unreadable or too small)" if info["skipped_files"] else ""
    reference = f"; kNN reference in {info['reference_train_seconds']:.0f} s" if "reference_train_seconds" in info else ""
    fusion = describe_fusion(info.get("fusion"))
    weights = f"; {fusion}" if fusion else ""
    calibration = info.get("calibration")
    threshold = (f"; threshold {calibration['threshold']:.4g} ({threshold_basis(calibration)})" if calibration
                 else "; no calibration (too few images)")
    print(f"trained {args.detector} on {info['n_normal']} normal images in {info['train_seconds']:.0f} s on "
          f"{args.threads_used} threads{skipped}{reference}{weights}"
          f"{threshold}; saved to {Path(args.out) / 'model'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from detectors import load_detector
    from detectors.data import load_test_set
    from detectors.evaluation import evaluate, summary_line

    run = Path(args.model)
    detector = load_detector(run, device=args.device)  # a run folder or a saved detector folder
    reference = None
    if not args.no_reference and (run / "reference" / "config.json").is_file():
        reference = load_detector(run / "reference", device=args.device)
    test = load_test_set(args.data, detector.input_shape, require_masks=False)
    out = Path(args.out) if args.out else run / "eval"
    report = evaluate(detector, test, out, reference=reference, overlays=args.overlays, progress=not args.quiet)
    print(summary_line(report))
    print(f"metrics: {out / 'metrics.json'}" + (f"; overlays: {report['overlays']}" if report["overlays"] else ""))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from detectors import load_detector

    from .predict import predict_paths

    detector = load_detector(args.model, device=args.device)
    report = predict_paths(
        detector, args.input, args.out, threshold=args.threshold, maps=not args.no_maps, masks=args.masks,
        batch_size=args.batch_size, progress=not args.quiet,
    )
    if report.n_images == 0:  # a camera writing only corrupt files must not pass unnoticed
        listed = "; ".join(list(report.skipped.values())[:3]) + (" ..." if len(report.skipped) > 3 else "")
        raise ValueError(f"no image could be scored: {len(report.skipped)} unreadable files ({listed})")
    skipped = f"; {len(report.skipped)} unreadable files skipped (listed in predictions.json)" if report.skipped else ""
    print(f"scored {report.n_images} images in {report.seconds:.1f} s ({report.images_per_second:.1f} images/s): "
          f"{report.n_anomalous} anomalous at threshold {report.threshold:.4g}{skipped}")
    print(f"predictions: {Path(args.out) / 'predictions.csv'}")
    return SKIPPED_EXIT if report.skipped and args.strict else 0


def cmd_export(args: argparse.Namespace) -> int:
    from detectors import load_detector
    from detectors.export import export_onnx

    out = Path(args.out)
    if out.is_dir():  # an existing folder: the model goes inside it
        out = out / "model.onnx"
    detector = load_detector(args.model, device="cpu")
    path = export_onnx(detector, out)
    height, width = detector.input_shape
    threshold = f"; threshold {detector.calibration['threshold']:.4g} in its metadata" if detector.calibration else ""
    print(f"exported {detector.kind} to {path}: input uint8 RGB (batch, {height}, {width}, 3), outputs scores and maps{threshold}")
    return 0


def _scorer(args: argparse.Namespace):
    from curate.sample_scorer import EAPScorer

    from synth.common.options import checked_options, parse_options

    options = checked_options(EAPScorer, parse_options(args.set), "EAP scorer")
    for name in ("seed", "device"):
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    return EAPScorer(**options)


def _device_and_quiet(
    parser: argparse.ArgumentParser, device: str | None = "what accelerate finds", threads: bool = True
) -> None:
    """``--device`` (with the default it falls back to; None: no such option), ``--threads`` (for the
    commands that compute in this process) and ``--quiet``."""
    if device is not None:
        parser.add_argument("--device", default=None, help=f"cpu, cuda, ... (default: {device})")
    if threads:
        parser.add_argument("--threads", type=_positive, default=None,
                            help="CPU threads for torch and BLAS, kept for the whole command (default: OMP_NUM_THREADS "
                                 "when set, else the CPUs this process may use that other processes do not keep busy, "
                                 "looked at again every few seconds)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _scorer_arguments(parser: argparse.ArgumentParser, set_help: str) -> None:
    """The dataset and EAP scorer arguments that ``score`` and ``curate`` share."""
    parser.add_argument("dataset", help="folder (or fsspec URL) written by anomalyforge generate")
    parser.add_argument("--normals", default=None, help="normal images (default: the folder the dataset was made from)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help=set_help)
    parser.add_argument("--seed", type=int, default=None, help="seed of the scorer's random subsets (default 0)")
    _device_and_quiet(parser, "a GPU when there is one")


def _engine_arguments(parser: argparse.ArgumentParser, workers: bool = True) -> None:
    """--engine and --ray-address (and --workers for commands that have no worker processes of their own)."""
    from synth.dataset.ray_engine import ENGINES

    if workers:
        parser.add_argument("--workers", type=_positive, default=1, help="CPUs of a local Ray with --engine ray (default 1)")
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="local (default): processes on this machine; ray: Ray tasks (pip install \"anomalyforge[ray]\")")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to use with --engine ray, e.g. ray://head:10001 or auto (default: a local Ray "
                             "with --workers CPUs)")


def cmd_score(args: argparse.Namespace) -> int:
    from curate.dataset_scores import score_dataset

    scored = score_dataset(
        args.dataset, _scorer(args), args.normals, progress=not args.quiet, engine=args.engine, workers=args.workers,
        ray_address=args.ray_address,
    )
    overall = scored.summary["all"]
    per = ", ".join(f"{k} {v.get('mean', float('nan')):.3f}" for k, v in scored.summary["by_generator"].items())
    skipped = f"; {len(scored.errors)} unreadable samples skipped" if scored.errors else ""
    print(f"scored {overall['scored']} of {overall['count']} samples: mean EAP {overall.get('mean', float('nan')):.3f} ({per}){skipped}")
    print(f"report: {scored.report}" if scored.report else "report: none (the dataset is not a local folder)")
    return 0


# selection options as curate's command line spells them
CURATE_FLAGS = {"top_fraction": "--top", "per_generator": "--per-generator", "quotas": "--quota", "max_area": "--max-area"}


def cmd_curate(args: argparse.Namespace) -> int:
    from curate.curation_job import curate_dataset
    from curate.selection import SelectionOptionError

    selection = {
        "top_fraction": args.top, "per_generator": args.per_generator, "threshold": args.threshold,
        "quotas": args.quota, "min_pixels": args.min_pixels, "max_area": args.max_area,
        "duplicate_similarity": None if args.keep_duplicates else args.duplicate_similarity,
    }
    try:
        result = curate_dataset(
            args.dataset, args.out, selection, fmt=args.format, scorer=_scorer(args), normals=args.normals,
            rescore=args.rescore, progress=not args.quiet, engine=args.engine, workers=args.workers, ray_address=args.ray_address,
        )
    except SelectionOptionError as error:  # in the command line's words
        raise ValueError(f"{CURATE_FLAGS[error.option]}: {error.explain(CURATE_FLAGS.get)}") from None
    kept, dropped = len(result.selection.kept), len(result.selection.dropped)
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(result.selection.reasons().items()))
    print(f"kept {kept} of {kept + dropped} samples in {result.out}" + (f" (dropped: {reasons})" if reasons else ""))
    print(f"report: {result.report}" if result.report else "report: none (the output is not a local folder)")
    return 0


def cmd_fit_defects(args: argparse.Namespace) -> int:
    from synth.common.options import checked_options, parse_options
    from synth.common.saved import PRECISION_NAMES
    from synth.diffusion import fit_defects
    from synth.registry import BACKENDS

    data = Path(args.data)
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data} is not a folder")
    options = checked_options(BACKENDS.get(args.backend), parse_options(args.set), f"{args.backend} diffusion")
    if args.device is not None:
        options["device"] = args.device
    if args.steps is not None:
        options["train_steps"] = args.steps
    if args.backend == "pretrained":
        if not args.pretrained:
            raise ValueError("--backend pretrained needs --pretrained DIR_OR_HUB_ID (a Stable Diffusion inpainting pipeline)")
        options["pretrained"] = args.pretrained
        if args.lora_rank:
            options["lora_rank"] = args.lora_rank
    fitted = fit_defects(
        data, args.out, args.backend, args.shots, [d.strip() for d in args.defects.split(",")] if args.defects else None,
        args.normals, options, preset=args.preset, seed=args.seed, preview=args.preview, progress=not args.quiet,
    )
    if fitted is None:  # under `accelerate launch`, one process writes the model
        return 0
    summary = fitted.generator.fit_summary
    counts = ", ".join(f"{d} {n}" for d, n in summary["shots"].items())
    lines = [f"learned {len(fitted.generator.defects)} defect types from {len(fitted.shots)} shots ({counts}) in "
             f"{summary['train_seconds']:.0f} s ({PRECISION_NAMES[summary['mixed_precision']]})" + (f"; {len(fitted.skipped)} unreadable files skipped" if fitted.skipped else "")
             + f"; saved to {fitted.out}"]
    if fitted.preview:
        lines.insert(0, f"preview sheet: {fitted.preview}")
    lines.append(f"generate with: anomalyforge generate --input {data} --generator diffusion --model {fitted.out} --out DIR")
    print("\n".join(lines))
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from curate.publish import publish_dataset

    url = publish_dataset(args.dataset, args.repo, private=args.private, license=args.license)
    print(f"published {args.dataset} to {url}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import time

    from synth.common.storage import check_output_folder

    from .pipeline import MANIFEST, run_recipe
    from .recipe import dump_recipe, load_recipe

    recipe = load_recipe(args.recipe, args.set)
    if args.threads is None and recipe["threads"] is not None:
        args.threads_used = use_threads(recipe["threads"])
    out = Path(args.out) if args.out else Path("runs") / recipe["name"]
    if args.check:
        earlier = check_output_folder(out, MANIFEST, "anomalyforge run")
        print(dump_recipe(recipe), end="")
        where = f"resume the run in {out} (finished steps are skipped)" if earlier else f"run in {out}"
        print(f"# recipe {args.recipe} is valid; it would {where}")
        return 0
    start = time.perf_counter()
    result = run_recipe(recipe, out, source=str(args.recipe), progress=not args.quiet)
    skipped = f" ({len(result.skipped)} steps done before, skipped)" if result.skipped else ""
    print(f"run {recipe['name']} finished in {time.perf_counter() - start:.0f} s{skipped}: {result.root}")
    if result.metrics:
        print(f"metrics: {result.metrics}")
    print(f"report: {result.report}")
    return 0


def _generate_parser(sub: Any) -> None:
    """The ``generate`` command's arguments."""
    from synth.dataset.layout import FORMATS
    from synth.presets import PRESETS
    from synth.registry import GENERATORS

    gen = sub.add_parser("generate", help="synthesise an anomaly dataset from a folder of normal images")
    gen.add_argument("--input", required=True,
                     help="folder of normal images, or an MVTec category (uses train/good); a path or an fsspec URL")
    gen.add_argument("--out", required=True, help="output folder or fsspec URL (an interrupted run resumes here)")
    gen.add_argument("--generator", choices=GENERATORS.names(), default="mix",
                     help="anomaly generator (default mix: cutpaste, nsa and draem in turn, see --weights)")
    gen.add_argument("--n", type=_positive, default=100, help="number of samples (default 100)")
    gen.add_argument("--seed", type=int, default=0, help="run seed: same seed and input, same samples (default 0)")
    gen.add_argument("--workers", type=_positive, default=1, help="worker processes, or local Ray CPUs (default 1)")
    _engine_arguments(gen, workers=False)
    gen.add_argument("--format", choices=FORMATS, default="mvtec",
                     help="mvtec (default): test/<generator>/ + ground_truth/; hf: hub-ready parquet folder")
    gen.add_argument("--preset", choices=(AUTO, *PRESETS), default=AUTO, help=PRESET_HELP)
    gen.add_argument("--variant", choices=["normal", "scar", "union", "3way"], default=None,
                     help="CutPaste variant (default: union, a normal patch or a scar per sample)")
    gen.add_argument("--label-mode", choices=["binary", "intensity", "logistic-intensity"], default="logistic-intensity",
                     help="NSA mask type (default: logistic-intensity)")
    gen.add_argument("--textures", default=None, help="DRAEM anomaly source texture folder (default: bundled textures)")
    gen.add_argument("--weights", type=_weights, default=None, help="mix weights, e.g. cutpaste=1,nsa=1,draem=2,diffusion=1")
    gen.add_argument("--model", default=None, help="diffusion generator folder written by anomalyforge fit-defects")
    gen.add_argument("--defect", default=None, help="diffusion: the learned defect type to paint (default: any)")
    gen.add_argument("--p-unchanged", type=_probability, default=0.0, help="probability of an unchanged (normal) sample")
    gen.add_argument("--png-compression", type=int, choices=range(10), default=None, metavar="0-9",
                     help="zlib level of the PNG files with OpenCV's filters (default: Up filter at level 1, as fast "
                          "as OpenCV's default and usually smaller; higher levels: slower, a few percent smaller)")
    gen.add_argument("--shard-size", type=_positive, default=1000, help="samples per parquet shard (hf format; default 1000)")
    gen.add_argument("--license", default=None, help="license of the source images, for the dataset card")
    gen.add_argument("--preview", action="store_true", help="also write preview.png into the output folder")
    _device_and_quiet(gen, device=None, threads=False)  # its workers take one thread each
    gen.set_defaults(func=cmd_generate)


def _preview_parser(sub: Any) -> None:
    """The ``preview`` command's arguments."""
    pre = sub.add_parser("preview", help="contact sheet (image, mask overlay) of a generated dataset")
    pre.add_argument("dataset", help="folder written by anomalyforge generate")
    pre.add_argument("--out", default=None, help="PNG path (default: DATASET/preview.png)")
    pre.add_argument("--n", type=_positive, default=24, help="samples on the sheet (default 24, the first ones)")
    pre.add_argument("--columns", type=_positive, default=4, help="samples per row (default 4)")
    pre.add_argument("--tile", type=_positive, default=160, help="size of each picture in pixels (default 160)")
    pre.set_defaults(func=cmd_preview)


def _train_parser(sub: Any) -> None:
    """The ``train`` command's arguments."""
    from detectors.registry import DETECTORS
    from synth.presets import PRESETS

    train = sub.add_parser("train", help="train a detector on normal images and synthetic anomalies")
    train.add_argument("--data", required=True,
                       help="MVTec category (uses train/good), folder of normal images, or a dataset written by generate")
    train.add_argument("--detector", choices=DETECTORS.names(), default="hybrid",
                       help="hybrid (default): normal memory + head trained on synthetic anomalies, fused; "
                            "feature: feature-space discriminator alone; draem; knn: normal-only reference")
    train.add_argument("--synth", default=None,
                       help="generators for training anomalies, e.g. draem,nsa,cutpaste or draem=2,nsa=1; none")
    train.add_argument("--anomalies", default=None, help="also train on the anomalies of a dataset written by generate")
    train.add_argument("--normals", default=None, help="normal images, when --data is a generated dataset whose input moved")
    train.add_argument("--out", required=True, help="run folder: model/, reference/, train.json")
    train.add_argument("--epochs", type=_positive, default=None, help="training epochs (default: the detector's own)")
    train.add_argument("--size", type=_positive, default=256,
                       help="short side of the detector's input (default 256); the long side follows the images' aspect")
    train.add_argument("--aspect", choices=["auto", "square"], default="auto",
                       help="auto: keep the training images' aspect ratio (default); square: resize to size x size")
    train.add_argument("--preset", choices=(AUTO, *PRESETS), default=AUTO, help=PRESET_HELP)
    train.add_argument("--textures", default=None, help="DRAEM anomaly source textures (default: bundled)")
    train.add_argument("--seed", type=int, default=None, help="seed of the data split, anomalies and training (default 0)")
    train.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="detector options, e.g. hidden=512")
    train.add_argument("--no-reference", action="store_true", help="do not fit the normal-only kNN reference")
    train.add_argument("--shots-from", default=None, metavar="DIR",
                       help="MVTec-layout folder with a few real defects (test/<defect>/, ground_truth/): the hybrid "
                            "transplants --shots of each type (drawn with --seed) onto the normal images")
    train.add_argument("--shots", type=_positive, default=3, help="real defects per type drawn from --shots-from (default 3)")
    train.add_argument("--target-fpr", type=_open_probability, default=0.01,
                       help="decision threshold: at most this share of held-out normal images flagged (default 0.01)")
    _device_and_quiet(train)
    train.set_defaults(func=cmd_train)


def _evaluate_parser(sub: Any) -> None:
    """The ``evaluate`` command's arguments."""
    ev = sub.add_parser("evaluate", help="metrics and heat-map overlays of a trained detector on a real test split")
    ev.add_argument("--model", required=True, help="run folder written by train (or a saved detector folder)")
    ev.add_argument("--data", required=True, help="MVTec-layout category with test/ and ground_truth/")
    ev.add_argument("--out", default=None, help="output folder (default: MODEL/eval)")
    ev.add_argument("--overlays", type=int, default=16, help="test images to draw heat maps for (default 16)")
    ev.add_argument("--no-reference", action="store_true", help="skip the kNN reference saved with the run")
    _device_and_quiet(ev)
    ev.set_defaults(func=cmd_evaluate)


def _predict_parser(sub: Any) -> None:
    """The ``predict`` command's arguments."""
    pr = sub.add_parser("predict", help="score new images with a trained detector: pass/fail, heat maps, masks")
    pr.add_argument("--model", required=True, help="run folder written by train (or a saved detector folder)")
    pr.add_argument("--input", required=True, nargs="+", help="images, folders (searched recursively) or glob patterns")
    pr.add_argument("--out", required=True, help="output folder: predictions.csv, predictions.json, overlays/, masks/")
    pr.add_argument("--threshold", type=float, default=None,
                    help="decision threshold on the image score (default: the one calibrated at training time)")
    pr.add_argument("--no-maps", action="store_true", help="no heat-map overlay per image")
    pr.add_argument("--masks", action="store_true", help="also write a binary defect mask per image, at its own size")
    pr.add_argument("--strict", action="store_true",
                    help=f"exit with {SKIPPED_EXIT} when any input file was unreadable (default: 0 when at least one image "
                         "was scored; scoring none is always an error, exit 2)")
    pr.add_argument("--batch-size", type=_positive, default=None, help="images per batch (default: the detector's)")
    _device_and_quiet(pr, "a GPU when there is one")
    pr.set_defaults(func=cmd_predict)


def _export_parser(sub: Any) -> None:
    """The ``export`` command's arguments."""
    ex = sub.add_parser("export", help="write a trained detector as one ONNX model for onnxruntime (uint8 image in, score and map out)")
    ex.add_argument("--model", required=True, help="run folder written by train (or a saved detector folder)")
    ex.add_argument("--format", choices=["onnx"], default="onnx", help="model format (default onnx)")
    ex.add_argument("--out", required=True, help="output file, e.g. model.onnx (an existing folder: FOLDER/model.onnx)")
    ex.set_defaults(func=cmd_export)


def _score_parser(sub: Any) -> None:
    """The ``score`` command's arguments."""
    score = sub.add_parser("score", help="EAP quality score of every sample of a generated dataset, with a report")
    _scorer_arguments(score, "scorer options, e.g. n_subsets=50 k=auto n_normal_patches=4096")
    _engine_arguments(score)
    score.set_defaults(func=cmd_score)


def _curate_parser(sub: Any) -> None:
    """The ``curate`` command's arguments."""
    from curate.selection import SELECTION_DEFAULTS
    from synth.dataset.layout import FORMATS

    cur = sub.add_parser("curate", help="keep the best samples by EAP (scores first when needed) into a new dataset")
    _scorer_arguments(cur, "scorer options when scoring")
    cur.add_argument("--out", required=True, help="folder (or fsspec URL) for the curated dataset")
    cur.add_argument("--top", type=_probability, default=None, help="keep this fraction of all samples, best first")
    cur.add_argument("--per-generator", action="store_true",
                     help="--top applies to each generator's samples: the curated set keeps the generated mix")
    cur.add_argument("--threshold", type=float, default=None, help="keep samples with EAP at least this")
    cur.add_argument("--quota", type=_weights, default=None,
                     help="per-generator caps: counts or fractions, e.g. cutpaste=100,draem=0.5")
    cur.add_argument("--min-pixels", type=int, default=SELECTION_DEFAULTS["min_pixels"],
                     help=f"drop masks with fewer pixels (default {SELECTION_DEFAULTS['min_pixels']})")
    cur.add_argument("--max-area", type=float, default=SELECTION_DEFAULTS["max_area"],
                     help=f"drop masks covering this much of the image (default {SELECTION_DEFAULTS['max_area']})")
    cur.add_argument("--duplicate-similarity", type=float, default=SELECTION_DEFAULTS["duplicate_similarity"],
                     help="drop a sample whose in-mask features match a better one this closely at the same place "
                          f"(default {SELECTION_DEFAULTS['duplicate_similarity']})")
    cur.add_argument("--keep-duplicates", action="store_true", help="no near-duplicate removal")
    cur.add_argument("--format", choices=FORMATS, default=None, help="output format (default: the input's)")
    _engine_arguments(cur)
    cur.add_argument("--rescore", action="store_true", help="score again even when scores are stored")
    cur.set_defaults(func=cmd_curate)


def _fit_defects_parser(sub: Any) -> None:
    """The ``fit-defects`` command's arguments."""
    from synth.presets import PRESETS
    from synth.registry import BACKENDS

    fit = sub.add_parser(
        "fit-defects",
        help="learn defect types from a few real defects with a diffusion model (for generate --generator diffusion)",
        description="Learn defect types from a few real defects per type (test/<defect>/ with ground_truth/ masks of an "
        "MVTec-layout folder) and the normal images, with a diffusion model. Runs on CPU, one GPU, or several under "
        "`accelerate launch --no_python anomalyforge fit-defects ...`. An interrupted fit resumes from OUT/checkpoint.",
    )
    fit.add_argument("--data", required=True, help="MVTec-layout folder with test/<defect>/ and ground_truth/")
    fit.add_argument("--out", required=True, help="folder for the fitted generator")
    fit.add_argument("--shots", type=_positive, default=3, help="real defects per type to learn from (default 3)")
    fit.add_argument("--defects", default=None, help="comma-separated defect types (default: all in test/)")
    fit.add_argument("--normals", default=None, help="normal images (default: DATA/train/good)")
    fit.add_argument("--backend", choices=BACKENDS.names(), default="scratch",
                     help="scratch (default): small U-Net trained here (CPU-friendly); pretrained: Stable Diffusion inpainting")
    fit.add_argument("--pretrained", default=None, help="pretrained backend: folder or hub id of an inpainting pipeline")
    fit.add_argument("--lora-rank", type=int, default=0, help="pretrained backend: LoRA rank on the U-Net (0: off)")
    fit.add_argument("--steps", type=_positive, default=None, help="training steps")
    fit.add_argument("--preset", choices=(AUTO, *PRESETS), default=AUTO, help=PRESET_HELP)
    fit.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                     help="generator options, e.g. resolution=128 batch_size=16 num_inference_steps=50")
    fit.add_argument("--preview", type=int, default=3, metavar="N",
                     help="write OUT/preview.png: each type's shots next to N generated defects (default 3; 0: none)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the shot choice and training (default 0)")
    _device_and_quiet(fit)
    fit.set_defaults(func=cmd_fit_defects)


def _publish_parser(sub: Any) -> None:
    """The ``publish`` command's arguments."""
    pub = sub.add_parser("publish", help="push a hub-ready dataset folder to the Hugging Face Hub")
    pub.add_argument("dataset", help="hub-ready folder (generate or curate with --format hf)")
    pub.add_argument("--repo", required=True, help="dataset repo id, user/name")
    pub.add_argument("--private", action="store_true", help="create the dataset repo as private")
    pub.add_argument("--license", default=None, help="license of the source images, for the dataset card")
    pub.set_defaults(func=cmd_publish)


def _run_parser(sub: Any) -> None:
    """The ``run`` command's arguments."""
    run = sub.add_parser(
        "run", help="run a recipe: generate, curate with EAP, train a detector, evaluate, report (and publish)",
        description="Run the whole pipeline from one YAML recipe (see recipes/). Every step's output goes into the run "
        "folder with a report page; running again skips finished steps and resumes an interrupted run.",
    )
    run.add_argument("recipe", help="recipe YAML file, e.g. recipes/demo.yaml")
    run.add_argument("--out", default=None, help="run folder (default: runs/<recipe name>)")
    run.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                     help="override any recipe key, e.g. train.epochs=5 data.normals=path/to/images generate.n=200")
    run.add_argument("--check", action="store_true", help="validate and print the resolved recipe; run nothing")
    _device_and_quiet(run, device=None)
    run.set_defaults(func=cmd_run)


def _demo_parser(sub: Any) -> None:
    """The ``demo`` command's arguments."""
    demo = sub.add_parser("demo", help="a quick look: anomalies on the bundled texture photos and a preview sheet "
                          "(the whole pipeline: anomalyforge run recipes/demo.yaml)")
    demo.add_argument("--out", default="runs/quick-demo", help="output folder (default runs/quick-demo)")
    demo.add_argument("--n", type=_positive, default=48, help="samples to make (default 48)")
    demo.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    demo.add_argument("--workers", type=_positive, default=1, help="worker processes (default 1)")
    _device_and_quiet(demo, device=None, threads=False)
    demo.set_defaults(func=cmd_demo)


COMMANDS = (
    _generate_parser, _preview_parser, _train_parser, _evaluate_parser, _predict_parser, _export_parser, _score_parser,
    _curate_parser, _fit_defects_parser, _publish_parser, _run_parser, _demo_parser,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anomalyforge", description="Synthetic anomaly data for visual inspection.")
    parser.add_argument("--version", action="version", version=f"anomalyforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_parser in COMMANDS:
        add_parser(sub)
    return parser


LOG_PROGRESS_INTERVAL_S = 30  # progress bars written to a log (not a terminal): one line at most this often


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not sys.stderr.isatty():  # read by tqdm when the commands first import it
        os.environ.setdefault("TQDM_MININTERVAL", str(LOG_PROGRESS_INTERVAL_S))
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if hasattr(args, "threads"):  # the commands that compute in this process
            args.threads_used = use_threads(args.threads)
        return args.func(args)
    except (FileNotFoundError, NotADirectoryError, FileExistsError, ValueError, ImportError) as error:
        print(f"anomalyforge {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
