"""The package layers hold (import-linter), importing or generating pulls no heavy library,
and one contract and one registry serve generators, detectors and the EAP scorer."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import textured, write_images

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("synth", "detectors", "curate", "anomalyforge")
HEAVY = ("torch", "sklearn", "datasets", "diffusers", "pyarrow", "albumentations", "scipy")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the packages under ``cwd`` with its pyproject.toml's contracts."""
    command = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", command, "--config", str(cwd / "pyproject.toml"), "--no-cache"],
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(cwd)}, capture_output=True, text=True)


def test_the_layer_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, upward, broken", [
    ("synth/common/files.py", "from curate import selection", "synth is not allowed to import curate"),
    # the loops that function-level imports once held together cannot come back
    ("detectors/calibration.py", "from . import synthetic", "detectors.calibration is not allowed to import detectors.synthetic"),
    ("synth/dataset/ray_engine.py", "from . import workers", "synth.dataset.ray_engine is not allowed to import synth.dataset.workers"),
    ("synth/common/pictures.py", "from .. import defect_masks", "synth.common is not allowed to import synth.defect_masks"),
    ("curate/selection.py", "from . import dataset_scores", "curate.selection is not allowed to import curate.dataset_scores"),
])
def test_an_upward_import_breaks_the_contracts(tmp_path, module, upward, broken):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n\ndef _upward():\n    {upward}\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert broken in result.stdout


def loaded_after(code: str) -> list[str]:
    """The heavy libraries a fresh interpreter has loaded after running ``code``."""
    probe = code + f"\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_packages_pulls_no_heavy_library():
    assert loaded_after("import synth, curate, detectors, anomalyforge.cli; from synth import build_generator, ImageFiles") == []
    assert "torch" in loaded_after("import synth; synth.SyntheticAnomalyDataset")  # a lazy name loads its module


def test_generate_pulls_no_heavy_library(tmp_path):
    """Every classical generator and the default mix (DRAEM with a texture folder: its bundled textures
    come from scikit-image, which loads scipy)."""
    write_images(tmp_path / "good", [textured(64, 64, seed=i) for i in range(3)], "n")
    write_images(tmp_path / "textures", [textured(48, 48, seed=9)], "t")
    for generator in ("draem", "nsa", "cutpaste", "mix"):
        code = (f"from anomalyforge.cli import main\nassert main(['generate', '--input', {str(tmp_path / 'good')!r}, "
                f"'--generator', {generator!r}, '--textures', {str(tmp_path / 'textures')!r}, '--n', '4', '--quiet', "
                f"'--out', {str(tmp_path / generator)!r}]) == 0")
        assert loaded_after(code) == [], generator
        assert len(list((tmp_path / generator / "test").rglob("*.png"))) == 4


def test_every_registered_name_loads_its_class():
    from detectors.registry import DETECTORS
    from synth.registry import BACKENDS, GENERATORS

    for name in GENERATORS.names():
        assert GENERATORS.get(name).name == name
    for registry in (DETECTORS, BACKENDS):
        for name in registry.names():
            klass = registry.get(name)
            assert klass.kind == name and registry.name_of(klass) == name
    with pytest.raises(ValueError, match="unknown detector 'nope'; choose from hybrid"):
        DETECTORS.get("nope")


def contract_objects():
    from curate.sample_scorer import EAPScorer
    from detectors.registry import DETECTORS
    from synth import DRAEM, NSA, CutPaste, Mix

    sources = [textured(32, 32, seed=i) for i in range(2)]
    yield CutPaste(variant="scar", jitter=0.2)
    yield NSA(sources=sources, preset="texture", num_patches=2)
    yield DRAEM(opacity=(0.2, 0.8))
    yield Mix([CutPaste(), DRAEM()], [1.0, 3.0], p_unchanged=0.25)
    yield EAPScorer(n_subsets=7, batch_size=3)
    for name in DETECTORS.names():
        yield DETECTORS.get(name)(image_size=96, seed=3)


@pytest.mark.parametrize("obj", list(contract_objects()), ids=lambda o: type(o).__name__)
def test_get_params_rebuilds_the_same_object(obj):
    params = obj.get_params()
    assert set(params) == set(type(obj).param_names())
    copy = type(obj)(**params)
    assert copy.get_config() == obj.get_config()
    assert not set(obj.not_config) & set(obj.get_config())


def test_get_config_leaves_out_what_does_not_decide_the_output():
    from curate.sample_scorer import EAPScorer

    assert EAPScorer(batch_size=3, device="cpu").get_config() == EAPScorer().get_config()
    assert EAPScorer(n_subsets=7).get_config() != EAPScorer().get_config()


def test_one_weight_reading_for_the_cli_and_the_detectors():
    from detectors.synthetic import make_generator
    from synth.registry import parse_weights

    assert parse_weights("cutpaste=1, nsa:2.5") == {"cutpaste": 1.0, "nsa": 2.5}
    assert parse_weights("draem,nsa=2", default=1.0) == {"draem": 1.0, "nsa": 2.0}
    with pytest.raises(ValueError, match="weights must look like"):
        parse_weights("draem,nsa=2")
    with pytest.raises(ValueError, match="weight of 'nsa' is not a number"):
        parse_weights("nsa=lots")
    mix = make_generator("draem=3,cutpaste", None, [textured(32, 32)])
    assert [g.name for g in mix.generators] == ["draem", "cutpaste"] and mix.weights == [3.0, 1.0]


def test_presets_come_from_one_table():
    from anomalyforge.cli import build_parser, generator_options
    from synth.presets import preset_options

    args = build_parser().parse_args(["generate", "--input", "x", "--out", "y", "--preset", "object"])
    options = generator_options(args)
    # every generator the command builds takes the preset's options (the transplant needs shots: the hybrid builds it)
    assert set(options) - {"mix"} == set(preset_options("object")) - {"transplant"}
    for name, implied in preset_options("object").items():
        if name == "transplant":
            continue
        for key, value in implied.items():
            assert options[name][key] == value, (name, key)
    with pytest.raises(ValueError, match="preset must be one of"):
        preset_options("wood")


def test_cached_sources_are_read_only(tmp_path):
    from synth.common.readers import read_image
    from synth.dataset.workers import GenerationTask, SampleMaker

    path = write_images(tmp_path / "good", [textured(32, 32)], "n")[0]
    maker = SampleMaker(GenerationTask([path], path.parent, None, 0))
    first = maker.read_source(path)
    assert maker.read_source(path) is first
    with pytest.raises(ValueError):
        first[0, 0, 0] = 1
    np.testing.assert_array_equal(first, read_image(path))
