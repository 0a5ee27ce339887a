"""Recipes: the whole pipeline's options in one YAML file, checked in full before anything runs.

A recipe is read, merged over :data:`DEFAULTS`, changed by ``--set KEY=VALUE`` overrides, and
validated: every key must be known, every value of the right type, every path present. Options that
are passed on to a generator, the EAP scorer or a detector are checked against that class's
constructor (its parameter names and type hints), so the recipe accepts exactly what the classes do.
"""

from __future__ import annotations

import copy
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
from synth.common.options import OptionError, conform, describe, parse_assignments
from synth.common.png import check_compression
from synth.dataset.ray_engine import ENGINES
from synth.dataset.writers import FORMATS
from synth.presets import PRESETS, preset_options
from synth.registry import BACKENDS, DEFAULT_MIX, GENERATORS, MIXABLE

EMBEDDED = "embedded"
AUTO = "auto"

# The recipe's own keys: (type hint, default). A dict value is a section of further keys.
SCHEMA: dict[str, Any] = {
    "name": (Optional[str], None),
    "seed": (int, 0),
    "data": {
        "normals": (Optional[str], None),
        "test": (Optional[str], AUTO),
        "preset": (Literal[(AUTO, *PRESETS)], AUTO),
        "holdout": (float, 0.2),
        "license": (Optional[str], None),
    },
    "fit_defects": {
        "enabled": (bool, False),
        "data": (str, AUTO),
        "shots": (int, 3),
        "defects": (Optional[list[str]], None),
        "backend": (Literal[BACKENDS.names()], "scratch"),
        "preview": (int, 3),
        "options": (dict, {}),
    },
    "generate": {
        "n": (int, 500),
        "format": (Literal[FORMATS], "hf"),
        "shard_size": (int, 1000),
        "png_compression": (Optional[int], None),
        "workers": (int, 1),
        "engine": (Literal[ENGINES], "local"),
        "ray_address": (Optional[str], None),
        "p_unchanged": (float, 0.0),
        "generators": (dict, {name: {"weight": weight} for name, weight in DEFAULT_MIX.items()}),
    },
    "curate": {
        "enabled": (bool, True),
        "top_fraction": (Optional[float], 0.5),  # a recipe keeps the better half unless told otherwise
        "per_generator": (bool, SELECTION_DEFAULTS["per_generator"]),
        "threshold": (Optional[float], SELECTION_DEFAULTS["threshold"]),
        "quotas": (Optional[dict[str, float]], SELECTION_DEFAULTS["quotas"]),
        "min_pixels": (int, SELECTION_DEFAULTS["min_pixels"]),
        "max_area": (float, SELECTION_DEFAULTS["max_area"]),
        "duplicate_similarity": (Optional[float], SELECTION_DEFAULTS["duplicate_similarity"]),
        "scorer": (dict, {}),
        "engine": (Literal[ENGINES], "local"),
        "ray_address": (Optional[str], None),
    },
    "train": {
        "detector": (Literal[DETECTORS.names()], "hybrid"),
        "reference": (bool, True),
        "target_fpr": (float, 0.01),
    },
    "evaluate": {
        "enabled": (bool, True),
        "overlays": (int, 16),
        "holdout_anomalies": (int, 2),
    },
    "publish": {
        "repo": (Optional[str], None),
        "private": (bool, False),
        "license": (Optional[str], None),
    },
}

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
        return {k: build(v) if isinstance(v, dict) else copy.deepcopy(v[1]) for k, v in schema.items()}

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
                raise self.fail(where, f"unknown key; known keys{f' of {key}' if key else ''}: {', '.join(known)}")

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
    """The real test split (an MVTec-layout folder with test/ and ground_truth/), or None."""
    test = data["test"]
    if test == AUTO:
        normals = data["normals"]
        if normals == EMBEDDED or not (Path(normals) / "test").is_dir():
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
            fixed = {k: v[0] for k, v in spec.items()}
            if name != "train":  # train also takes the chosen detector's options, checked below
                check.keys(name, recipe[name], fixed)
            for key, hint in fixed.items():
                recipe[name][key] = check.value(f"{name}.{key}", recipe[name][key], hint)
        else:
            recipe[name] = check.value(name, recipe[name], spec[0])

    data = recipe["data"]
    if data["normals"] is None:
        raise check.fail("data.normals", f"required: a folder of normal images, an MVTec category, or {EMBEDDED!r}")
    if data["normals"] != EMBEDDED:
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
        if data["normals"] == EMBEDDED:
            data["preset"] = "texture"
        else:
            from synth.presets import guess_preset

            data["preset"] = guess_preset(data["normals"])

    _validate_fit_defects(check, recipe)
    _validate_generate(check, recipe)
    _validate_curate(check, recipe)
    _validate_train(check, recipe)
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
            elif not recipe["fit_defects"]["enabled"] and options["weight"] > 0:
                raise check.fail(f"{key}.model", "the diffusion generator needs a fitted model: set this path, or "
                                 "fit_defects.enabled: true to learn one in this run")
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
    own = {k: v[0] for k, v in SCHEMA["train"].items()}
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
