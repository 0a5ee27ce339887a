"""Recipes: the whole pipeline's options in one YAML file, checked in full before anything runs.

A recipe is read, merged over :data:`DEFAULTS`, changed by ``--set KEY=VALUE`` overrides, and
validated: every key must be known, every value of the right type, every path present. Options that
are passed on to a generator, the EAP scorer or a detector are checked against that class's
constructor (its parameter names and type hints), so the recipe accepts exactly what the classes do.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

import yaml

from curate.selection import (
    SELECTION_DEFAULTS,
    SELECTION_OPTIONS,
    SelectionOptionError,
    check_selection,
)
from detectors.registry import DETECTORS
from synth.common.options import OptionError, closest, conform, describe, parse_assignments
from synth.common.png import check_compression
from synth.dataset.ray_engine import ENGINES
from synth.dataset.writers import FORMATS
from synth.presets import PRESETS, preset_options
from synth.registry import BACKENDS, DEFAULT_MIX, GENERATORS, MIXABLE

from .demo import DEMO_DATA, DemoDataMissing

AUTO = "auto"

@dataclass(frozen=True)
class Key:
    """One recipe key: its type, its default, what it means (the table in recipes/README.md is made
    from these), and the pipeline steps whose output it decides (their fingerprints read it)."""

    hint: Any
    default: Any
    doc: str
    read_by: tuple[str, ...] = ()
    shown: str | None = None  # the default in the table, where the value alone does not say it


SEEDED = ("normals", "fit_defects", "generate", "curate", "train", "evaluate")

# The recipe's own keys. A dict value is a section of further keys.
SCHEMA: dict[str, Any] = {
    "name": Key(Optional[str], None, "run name; the default run folder is `runs/<name>`", ("report",), shown="file name"),
    "seed": Key(int, 0, "one seed for every step; same seed and data give the same run", SEEDED),
    "threads": Key(Optional[int], None, "CPU threads for torch and BLAS (`--threads` wins); `null`: `OMP_NUM_THREADS` "
                   "when set, else the CPUs other processes leave free, looked at again every few seconds"),
    "data": {
        "normals": Key(Optional[str], None, "folder of good images, an MVTec-layout category (its `train/good`), "
                       "`elpv` (solar cells with real defects, `pip install \"anomalyforge[demo]\"`) or `embedded` "
                       "(texture tiles bundled with scikit-image, no defects)", ("normals",), shown="required"),
        "test": Key(Optional[str], AUTO, "MVTec-layout folder with `test/<defect>/` and `ground_truth/`; `auto`: "
                    "`data.normals` when it has `test/` (for `elpv`: its held-back cells); `null`: none",
                    ("normals", "evaluate")),
        "preset": Key(Literal[(AUTO, *PRESETS)], AUTO, "`object` keeps anomalies on the object (background from the image "
                      "border), `texture` places them anywhere; `auto` decides from the border", ("fit_defects", "train")),
        "holdout": Key(float, 0.2, "without a real test split, this share of the normal images is kept out of training "
                       "for a synthetic check", ("normals",)),
        "license": Key(Optional[str], None, "license of your images, written to the dataset card", ("generate", "publish")),
    },
    "fit_defects": {
        "enabled": Key(bool, False, "draw a few real defects per type: a diffusion model learns them (`backend`), the detector gets them (`train.shots`)"),
        "data": Key(str, AUTO, "MVTec-layout folder with the real defects (`auto`: `data.test`)"),
        "shots": Key(int, 3, "real defects per type; they are left out of the evaluation"),
        "defects": Key(Optional[list[str]], None, "defect types to learn (default: all in `test/`)"),
        "backend": Key(Literal[(*BACKENDS.names(), "none")], "scratch", "`scratch` (small U-Net trained here), `none` "
                       "(no diffusion model: the shots only go to the detector) or `pretrained` "
                       "(Stable Diffusion inpainting, needs `options.pretrained`)"),
        "preview": Key(int, 3, "generated defects per type on the preview sheet"),
        "options": Key(dict, {}, "backend options, e.g. `train_steps`, `resolution`, `guidance_scale`, `lora_rank`"),
    },
    "generate": {
        "n": Key(int, 500, "samples to generate", ("generate",)),
        "format": Key(Literal[FORMATS], "hf", "`hf` (hub-ready parquet folder) or `mvtec`", ("generate",)),
        "shard_size": Key(int, 1000, "samples per parquet shard; an interrupted run resumes from the last complete shard",
                          ("generate",)),
        "png_compression": Key(Optional[int], None, "zlib level 0-9 of the PNG files; `null`: the Up filter at level 1, "
                               "as fast as OpenCV's default and usually smaller"),
        "workers": Key(int, 1, "worker processes, or the CPUs of a local Ray (the output does not depend on it)"),
        "engine": Key(Literal[ENGINES], "local", "`local` (processes here) or `ray` (Ray tasks; "
                      "`pip install \"anomalyforge[ray]\"`): the same dataset"),
        "ray_address": Key(Optional[str], None, "Ray cluster for `engine: ray` (e.g. `ray://head:10001`); `null`: a local Ray"),
        "p_unchanged": Key(float, 0.0, "share of unchanged (normal) samples", ("generate",)),
        "generators": Key(dict, {name: {"weight": weight} for name, weight in DEFAULT_MIX.items()},
                          "`{name: {weight: w, ...options}}` for `cutpaste`, `nsa`, `draem`, `diffusion` (`model:` a "
                          "`fit-defects` folder, or the model fitted in this run); a recipe's list replaces the default one",
                          ("generate",), shown=", ".join(DEFAULT_MIX) + ", weight 1 each"),
    },
    "curate": {
        "enabled": Key(bool, True, "score with EAP and keep the best; `false` trains on everything generated"),
        # a recipe keeps the better half unless told otherwise
        "top_fraction": Key(Optional[float], 0.5, "keep this share, best EAP first"),
        "per_generator": Key(bool, SELECTION_DEFAULTS["per_generator"], "`top_fraction` applies to each generator's "
                             "samples, so the curated set keeps the generated mix; needs `top_fraction`"),
        "threshold": Key(Optional[float], SELECTION_DEFAULTS["threshold"], "keep samples with at least this EAP"),
        "quotas": Key(Optional[dict[str, float]], SELECTION_DEFAULTS["quotas"],
                      "per-generator caps, counts or shares, e.g. `{draem: 0.4}`"),
        "min_pixels": Key(int, SELECTION_DEFAULTS["min_pixels"], "drop masks with fewer pixels"),
        "max_area": Key(float, SELECTION_DEFAULTS["max_area"], "drop masks covering more of the image"),
        "duplicate_similarity": Key(Optional[float], SELECTION_DEFAULTS["duplicate_similarity"],
                                    "drop near duplicates of a better sample (`null`: keep them)"),
        "scorer": Key(dict, {}, "EAP scorer options, e.g. `n_subsets`, `image_size`, `n_normal_patches`"),
        "engine": Key(Literal[ENGINES], "local", "score the samples on Ray workers (`ray`; the fit stays in one process); "
                      "same scores"),
        "ray_address": Key(Optional[str], None, "Ray cluster for `engine: ray`; `null`: a local Ray"),
    },
    "train": {
        "detector": Key(Literal[DETECTORS.names()], "hybrid", "`hybrid` (normal-patch memory and a head trained on the "
                        "synthetic anomalies, fused), `feature` (a feature-space discriminator alone), `draem`, or `knn` "
                        "(normal images only)"),
        "reference": Key(bool, True, "also fit the normal-only kNN reference the report compares against"),
        "target_fpr": Key(float, 0.01, "decision threshold: at most this share of held-out normal images flagged"),
        "shots": Key(bool, False, "give the real defects drawn by `fit_defects` to a detector that learns from them "
                     "(the hybrid transplants them onto normal images and keeps their patches as a memory of known "
                     "defects for the image score); at 3 shots per type it raised image AUROC on three of the four shared "
                     "categories (the fourth was at 1.0) and pixel AP on three, level on the fourth (docs/measurements.md)"),
    },
    "evaluate": {
        "enabled": Key(bool, True, "evaluate on `data.test`, or on the synthetic hold-out check", ("normals",)),
        "overlays": Key(int, 16, "test images drawn with heat maps"),
        "holdout_anomalies": Key(int, 2, "synthetic anomalies per held-out image in the check"),
    },
    "publish": {
        "repo": Key(Optional[str], None, "`user/name`: upload the curated dataset to the Hugging Face Hub (token from "
                    "`HF_TOKEN` or `hf auth login`)"),
        "private": Key(bool, False, "create a private dataset repo"),
        "license": Key(Optional[str], None, "license for the card (default: `data.license`)"),
    },
}
# Sections whose every key (and, for train, every detector option) decides a step's output.
READ_WHOLE = {"fit_defects": "fit_defects", "curate": "curate", "train": "train", "evaluate": "evaluate", "publish": "publish"}
# Rows of the keys table for keys the schema does not list.
MORE_ROWS = {
    "train": ("train.*", "", "any option of the chosen detector, e.g. `epochs`, `image_size`, `hidden`, `synth` (`none` "
              "by default: the curated anomalies are the training anomalies; `draem,nsa` adds anomalies made on the fly)"),
}


def keys_read_by(step: str) -> tuple[str, ...]:
    """The recipe keys (or whole sections) whose values decide ``step``'s output."""
    out = []
    for name, entry in SCHEMA.items():
        if isinstance(entry, Key):
            out += [name] if step in entry.read_by else []
        elif READ_WHOLE.get(name) == step:
            out.append(name)
        else:
            out += [f"{name}.{key}" for key, spec in entry.items() if step in spec.read_by]
    return tuple(out)


def keys_table() -> str:
    """The Markdown table of every recipe key, its default and meaning (recipes/README.md holds it)."""

    def shown(spec: Key) -> str:
        if spec.shown is not None:
            return spec.shown
        return f"`{yaml.safe_dump(spec.default, default_flow_style=True).strip().removesuffix('...').strip()}`"

    rows = ["| key | default | meaning |", "|---|---|---|"]
    for name, entry in SCHEMA.items():
        entries = [(name, entry)] if isinstance(entry, Key) else [(f"{name}.{k}", v) for k, v in entry.items()]
        rows += [f"| `{key}` | {shown(spec)} | {spec.doc} |" for key, spec in entries]
        if name in MORE_ROWS:
            key, default, doc = MORE_ROWS[name]
            rows.append(f"| `{key}` | {default} | {doc} |")
    return "\n".join(rows) + "\n"


# Keys whose recipe value replaces the default as a whole (a recipe lists the generators it wants).
REPLACED = {("generate", "generators")}
# Keys that do not change a step's output (left out of the fingerprints that decide what to re-run).
NOT_OUTPUT = {
    ("generate", "workers"), ("generate", "engine"), ("generate", "ray_address"), ("curate", "engine"),
    ("curate", "ray_address"),
}


class RecipeError(OptionError):
    """A recipe that cannot run: the message names the file and the key."""


def defaults() -> dict[str, Any]:
    """The default recipe (every section, every key)."""

    def build(schema: dict[str, Any]) -> dict[str, Any]:
        return {k: build(v) if isinstance(v, dict) else copy.deepcopy(v.default) for k, v in schema.items()}

    return build(SCHEMA)


# -- reading -------------------------------------------------------------------------------------
def read_yaml(path: str | Path) -> dict[str, Any]:
    """The recipe file as a mapping (an empty file is an empty recipe)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path}: no such file")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise RecipeError(f"recipe {path}: not valid YAML: {error}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"recipe {path}: not a text file") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise RecipeError(f"recipe {path}: the top level must be a mapping of sections, got {type(content).__name__}")
    return content


def _merge(base: dict[str, Any], changes: Mapping[str, Any], at: tuple[str, ...] = ()) -> dict[str, Any]:
    for key, value in changes.items():
        here = at + (key,)
        if isinstance(value, dict) and isinstance(base.get(key), dict) and here not in REPLACED:
            _merge(base[key], value, here)
        else:
            base[key] = copy.deepcopy(value)
    return base


def apply_override(recipe: dict[str, Any], keys: list[str], value: Any) -> None:
    node = recipe
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"--set {'.'.join(keys)}: {'.'.join(keys[: depth + 1])} is not a section")
        node = child
    node[keys[-1]] = value


# -- validation ------------------------------------------------------------------------------------
class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, problem: str) -> RecipeError:
        return RecipeError(f"recipe {self.source}: {key}: {problem}")

    def value(self, key: str, value: Any, hint: Any) -> Any:
        ok, converted = conform(value, hint)
        if not ok:
            raise self.fail(key, f"expected {describe(hint)}, got {value!r}")
        return converted

    def keys(self, key: str, given: Mapping[str, Any], known: typing.Iterable[str]) -> None:
        known = list(known)
        for name in given:
            if name not in known:
                where = f"{key}.{name}" if key else str(name)
                raise self.fail(where, f"unknown key{closest(name, known)}; known keys{f' of {key}' if key else ''}: "
                                       f"{', '.join(known)}")

    def section(self, key: str, given: Any, hints: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(given, dict):
            raise self.fail(key, f"expected a mapping of options, got {given!r}")
        self.keys(key, given, hints)
        return {name: self.value(f"{key}.{name}", value, hints[name]) for name, value in given.items()}

    def path(self, key: str, value: str, folder: bool = True) -> str:
        path = Path(value).expanduser()
        if not path.exists():
            raise self.fail(key, f"path {value} does not exist")
        if folder and not path.is_dir():
            raise self.fail(key, f"{value} is not a folder")
        return str(path.resolve())

    def construct(self, key: str, klass: type, options: Mapping[str, Any], **extra: Any) -> None:
        """Build the object once (constructors only store and check their arguments) so that a bad
        value is reported now, under the recipe key."""
        try:
            klass(**options, **extra)
        except (ValueError, TypeError) as error:
            raise self.fail(key, str(error)) from None


def test_folder_of(data: Mapping[str, Any]) -> str | None:
    """The real test split (an MVTec-layout folder with test/ and ground_truth/), or None (also for
    demo data, whose test split the run writes: :attr:`RunContext.test_dir`)."""
    test = data["test"]
    if test == AUTO:
        normals = data["normals"]
        if normals in DEMO_DATA or not (Path(normals) / "test").is_dir():
            return None
        return normals
    return test


def validate(recipe: dict[str, Any], source: str = "<recipe>") -> dict[str, Any]:
    """The recipe with paths made absolute and ``auto`` values decided; raises :class:`RecipeError`
    naming the first bad key. Nothing is written."""
    check = _Checker(source)
    recipe = copy.deepcopy(recipe)
    check.keys("", recipe, SCHEMA)
    for name, spec in SCHEMA.items():
        if isinstance(spec, dict):
            if not isinstance(recipe[name], dict):
                raise check.fail(name, f"expected a section (a mapping of keys), got {recipe[name]!r}")
            fixed = {k: v.hint for k, v in spec.items()}
            if name != "train":  # train also takes the chosen detector's options, checked below
                check.keys(name, recipe[name], fixed)
            for key, hint in fixed.items():
                recipe[name][key] = check.value(f"{name}.{key}", recipe[name][key], hint)
        else:
            recipe[name] = check.value(name, recipe[name], spec.hint)

    data = recipe["data"]
    if data["normals"] is None:
        raise check.fail("data.normals", "required: a folder of normal images, an MVTec category, or demo data ("
                         + ", ".join(DEMO_DATA) + ")")
    if data["normals"] in DEMO_DATA:
        try:
            DEMO_DATA[data["normals"]].check()
        except DemoDataMissing as error:
            raise check.fail("data.normals", str(error)) from None
    else:
        data["normals"] = check.path("data.normals", data["normals"])
        from synth import normal_image_paths

        if not normal_image_paths(data["normals"]):
            raise check.fail("data.normals", f"no images in {data['normals']}")
    if data["test"] not in (None, AUTO):
        data["test"] = check.path("data.test", data["test"])
        if not (Path(data["test"]) / "test").is_dir():
            raise check.fail("data.test", f"{data['test']} has no test/ folder (MVTec layout: test/<defect>/, ground_truth/)")
    data["test"] = test_folder_of(data)
    if not 0.0 <= data["holdout"] < 1.0:
        raise check.fail("data.holdout", f"must be in [0, 1), got {data['holdout']}")
    if data["preset"] == AUTO:
        if data["normals"] in DEMO_DATA:
            data["preset"] = DEMO_DATA[data["normals"]].preset
        else:
            from synth.presets import guess_preset

            data["preset"] = guess_preset(data["normals"])

    _validate_fit_defects(check, recipe)
    _validate_generate(check, recipe)
    _validate_curate(check, recipe)
    _validate_train(check, recipe)
    if recipe["threads"] is not None and recipe["threads"] < 1:
        raise check.fail("threads", f"must be at least 1, got {recipe['threads']}")
    for key in ("overlays", "holdout_anomalies"):
        if recipe["evaluate"][key] < 0:
            raise check.fail(f"evaluate.{key}", f"must be at least 0, got {recipe['evaluate'][key]}")
    publish = recipe["publish"]
    if publish["repo"] is not None:
        from curate.publish import REPO_ID

        if not REPO_ID.match(publish["repo"]):
            raise check.fail("publish.repo", f"a dataset repo id looks like user/name, got {publish['repo']!r}")
        if recipe["generate"]["format"] != "hf":
            raise check.fail("publish.repo", "publishing needs generate.format: hf (a hub-ready dataset)")
    if recipe["name"] is None:
        recipe["name"] = Path(source).stem if source != "<recipe>" else "run"
    return recipe


def _validate_fit_defects(check: _Checker, recipe: dict[str, Any]) -> None:
    fit = recipe["fit_defects"]
    if not fit["enabled"]:
        return
    if fit["data"] == AUTO:
        if recipe["data"]["test"] is None:
            raise check.fail("fit_defects.data", "needs an MVTec-layout folder with real defects (test/<defect>/ and "
                             "ground_truth/); data.test has none")
        fit["data"] = recipe["data"]["test"]
    else:
        fit["data"] = check.path("fit_defects.data", fit["data"])
    if fit["shots"] < 1:
        raise check.fail("fit_defects.shots", f"must be at least 1, got {fit['shots']}")
    if fit["backend"] == "none":
        fit["options"] = check.section("fit_defects.options", fit["options"], {})
        return
    klass = BACKENDS.get(fit["backend"])
    hints = klass.param_hints()
    fit["options"] = check.section("fit_defects.options", fit["options"], hints)
    if fit["backend"] == "pretrained" and not fit["options"].get("pretrained"):
        raise check.fail("fit_defects.options.pretrained", "the pretrained backend needs a Stable Diffusion inpainting "
                         "pipeline (a folder or hub id)")
    check.construct("fit_defects.options", klass, fit["options"])


def _validate_generate(check: _Checker, recipe: dict[str, Any]) -> None:
    gen = recipe["generate"]
    for key in ("n", "workers", "shard_size"):
        if gen[key] < 1:
            raise check.fail(f"generate.{key}", f"must be at least 1, got {gen[key]}")
    try:
        check_compression(gen["png_compression"])
    except ValueError as error:
        raise check.fail("generate.png_compression", f"{error} (or null)") from None
    if not 0.0 <= gen["p_unchanged"] <= 1.0:
        raise check.fail("generate.p_unchanged", f"must be in [0, 1], got {gen['p_unchanged']}")
    generators = gen["generators"]
    check.keys("generate.generators", generators, MIXABLE)
    preset = recipe["data"]["preset"]
    total = 0.0
    for name, options in generators.items():
        key = f"generate.generators.{name}"
        if options is None:
            options = {}
        if name == "diffusion":
            hints = {"weight": float, "model": Optional[str], **GENERATORS.get(name).param_hints()}
        else:
            hints = {"weight": float, **{k: v for k, v in GENERATORS.get(name).param_hints().items() if k != "sources"}}
        options = check.section(key, options, hints)
        options.setdefault("weight", 1.0)
        if options["weight"] < 0:
            raise check.fail(f"{key}.weight", f"must be at least 0, got {options['weight']}")
        total += options["weight"]
        for option, value in preset_options(preset)[name].items():
            options.setdefault(option, value)
        if name == "diffusion":
            if options.get("model"):
                options["model"] = check.path(f"{key}.model", options["model"])
                if not (Path(options["model"]) / "generator.json").is_file():
                    raise check.fail(f"{key}.model", f"{options['model']} is not a folder written by fit-defects "
                                     "(no generator.json)")
            elif options["weight"] > 0 and (not recipe["fit_defects"]["enabled"] or recipe["fit_defects"]["backend"] == "none"):
                raise check.fail(f"{key}.model", "the diffusion generator needs a fitted model: set this path, or "
                                 "fit_defects.enabled: true with a backend to learn one in this run")
        else:
            if name == "draem" and options.get("texture_dir"):
                options["texture_dir"] = check.path(f"{key}.texture_dir", options["texture_dir"])
            check.construct(key, GENERATORS.get(name), {k: v for k, v in options.items() if k != "weight"})
        generators[name] = options
    if total <= 0:
        raise check.fail("generate.generators", "needs at least one generator with a positive weight")


def _validate_curate(check: _Checker, recipe: dict[str, Any]) -> None:
    from curate.sample_scorer import EAPScorer

    cur = recipe["curate"]
    try:
        check_selection(**{name: cur[name] for name in SELECTION_OPTIONS})
    except SelectionOptionError as error:
        raise check.fail(f"curate.{error.option}", error.explain(lambda name: f"curate.{name}")) from None
    if cur["quotas"]:
        check.keys("curate.quotas", cur["quotas"], recipe["generate"]["generators"])
    cur["scorer"] = check.section("curate.scorer", cur["scorer"], EAPScorer.param_hints())
    check.construct("curate.scorer", EAPScorer, cur["scorer"])


def _validate_train(check: _Checker, recipe: dict[str, Any]) -> None:
    train = recipe["train"]
    kind = train["detector"]
    own = {k: v.hint for k, v in SCHEMA["train"].items()}
    hints = {**own, **DETECTORS.get(kind).param_hints()}
    check.keys("train", train, hints)
    for key, value in train.items():
        train[key] = check.value(f"train.{key}", value, hints[key])
    options = {k: v for k, v in train.items() if k not in own}
    check.construct("train", DETECTORS.get(kind), options)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read, merge over the defaults, apply ``--set`` overrides, validate; the resolved recipe."""
    recipe = _merge(defaults(), read_yaml(path))
    for keys, value in parse_assignments(overrides or []):
        apply_override(recipe, keys, value)
    return validate(recipe, str(path))


def dump_recipe(recipe: Mapping[str, Any]) -> str:
    """The resolved recipe as YAML (keys in schema order)."""
    return yaml.safe_dump(dict(recipe), sort_keys=False, default_flow_style=False, width=110)
