"""Recipes: validation before anything runs, a tiny end-to-end run, skipping and resuming."""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import smooth, with_defect, write_images

from anomalyforge.cli import main
from anomalyforge.demo import DEMO_DATA
from anomalyforge.pipeline import STEPS, run_recipe
from anomalyforge.recipe import load_recipe
from synth.common.options import conform

ROOT = Path(__file__).resolve().parents[1]


def make_category(root: Path, n_train: int = 10, n_test: int = 3) -> Path:
    """An MVTec-layout category of calm 64 px images with obvious dark defects."""
    write_images(root / "train" / "good", [smooth(s) for s in range(n_train)], "n")
    write_images(root / "test" / "good", [smooth(100 + s) for s in range(n_test)], "g")
    defects = [with_defect(smooth(200 + s), s) for s in range(n_test)]
    write_images(root / "test" / "dent", [image for image, _ in defects], "d")
    write_images(root / "ground_truth" / "dent", [(mask * 255).astype(np.uint8) for _, mask in defects], "d")
    for path in (root / "ground_truth" / "dent").glob("d*.png"):
        path.rename(path.with_name(f"{path.stem}_mask.png"))
    return root


def tiny_recipe(normals: Path, **changes) -> dict:
    recipe = {
        "name": "tiny",
        "seed": 3,
        "data": {"normals": str(normals), "preset": "texture"},
        "generate": {"n": 12, "generators": {"cutpaste": {"weight": 1}, "draem": {"weight": 1}}},
        "curate": {"top_fraction": 0.75, "scorer": {"image_size": 64, "n_normal_patches": 256, "n_subsets": 5, "batch_size": 8}},
        "train": {"detector": "hybrid", "image_size": 64, "epochs": 2, "steps_per_epoch": 3, "hidden": 32, "bank_size": 300, "batch_size": 8},
        "evaluate": {"overlays": 4},
    }
    for section, values in changes.items():
        recipe[section] = {**recipe.get(section, {}), **values} if isinstance(values, dict) else values
    return recipe


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def category(tmp_path):
    return make_category(tmp_path / "cat")


@pytest.fixture
def recipe_file(tmp_path, category):
    return write_recipe(tmp_path / "tiny.yaml", tiny_recipe(category))


# -- validation --------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("trian.epochs=5", "trian: unknown key"),
    ("train.epoch=5", "train.epoch: unknown key"),
    ("curate.top=0.3", "curate.top: unknown key; known keys of curate: enabled, top_fraction"),
    ("train.epochs=five", "train.epochs: expected an integer, got 'five'"),
    ("train.detector=svm", "train.detector: expected one of 'hybrid', 'feature', 'draem', 'knn'"),
    ("data.normals=/no/such/folder", "data.normals: path /no/such/folder does not exist"),
    ("data.test=/no/such/test", "data.test: path /no/such/test does not exist"),
    ("generate.n=0", "generate.n: must be at least 1"),
    ("generate.generators.cutpaste.colour=red", "generate.generators.cutpaste.colour: unknown key"),
    ("generate.generators.cutpaste.variant=zigzag", "generate.generators.cutpaste.variant: expected one of 'normal'"),
    ("generate.generators.cutpaste.area_ratio=[0.5, 0.1]", "generate.generators.cutpaste: area_ratio must satisfy"),
    ("generate.generators.draem.texture_dir=/no/textures", "generate.generators.draem.texture_dir: path"),
    ("generate.generators.glitter.weight=1", "generate.generators.glitter: unknown key"),
    ("generate.generators.diffusion.weight=1", "generate.generators.diffusion.model: the diffusion generator needs"),
    ("curate.scorer.n_subsets=many", "curate.scorer.n_subsets: expected an integer"),
    ("curate.top_fraction=2", "curate.top_fraction: must be in (0, 1]"),
    (("curate.top_fraction=null", "curate.per_generator=true"),
     "curate.per_generator: applies the top fraction to each generator's samples: give curate.top_fraction too"),
    ("curate.max_area=0", "curate.max_area: must be in (0, 1], got 0"),
    ("curate.quotas={cutpaste: -1}", "curate.quotas: quota of 'cutpaste' must not be negative"),
    ("fit_defects.enabled=yes please", "fit_defects.enabled: expected true or false"),
    ("publish.repo=not a repo", "publish.repo: a dataset repo id looks like user/name"),
    ("data=3", "data: expected a section"),
])
def test_a_bad_recipe_is_one_clear_error_naming_the_key_and_nothing_is_written(recipe_file, tmp_path, capsys, override, message):
    out = tmp_path / "run"
    overrides = [override] if isinstance(override, str) else list(override)
    assert main(["run", str(recipe_file), "--out", str(out), "--set", *overrides]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert str(recipe_file) in error
    assert len(error.strip().splitlines()) == 1
    assert not out.exists()


def test_unreadable_recipe_files_are_named(tmp_path, capsys):
    (tmp_path / "list.yaml").write_text("- just\n- a list\n")
    (tmp_path / "broken.yaml").write_text("data: {normals: [\n")
    for name, message in [("list.yaml", "the top level must be a mapping"), ("broken.yaml", "not valid YAML"),
                          ("missing.yaml", "no such file")]:
        assert main(["run", str(tmp_path / name), "--out", str(tmp_path / "run")]) == 2
        error = capsys.readouterr().err
        assert name in error and message in error
    assert not (tmp_path / "run").exists()


def test_required_normals_and_a_run_folder_that_is_not_a_run(tmp_path, recipe_file, capsys):
    write_recipe(tmp_path / "empty.yaml", {"seed": 1})
    assert main(["run", str(tmp_path / "empty.yaml")]) == 2
    assert "data.normals: required" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["run", str(recipe_file), "--out", str(other)]) == 2
    assert "holds no anomalyforge run" in capsys.readouterr().err
    assert main(["run", str(recipe_file), "--out", str(other), "--check"]) == 2  # --check says so too
    assert "holds no anomalyforge run" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_overrides_are_typed_and_numbers_in_strings_become_numbers(recipe_file):
    recipe = load_recipe(recipe_file, ["train.lr=1e-4", "generate.n=7", "train.stages=[1, 2]", "curate.threshold=null"])
    assert recipe["train"]["lr"] == pytest.approx(1e-4) and isinstance(recipe["train"]["lr"], float)
    assert recipe["generate"]["n"] == 7 and recipe["train"]["stages"] == [1, 2] and recipe["curate"]["threshold"] is None
    # a recipe's generators replace the default mix; the preset fills their placement options
    assert sorted(recipe["generate"]["generators"]) == ["cutpaste", "draem"]
    assert recipe["generate"]["generators"]["cutpaste"]["background"] is None
    assert not conform("1e-4", int)[0] and not conform(True, int)[0] and not conform(True, float)[0]
    assert conform([0.1, 2], tuple[float, float]) == (True, [0.1, 2]) and not conform([0.1], tuple[float, float])[0]


def test_check_prints_the_resolved_recipe_and_writes_nothing(recipe_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(recipe_file), "--out", str(out), "--check", "--set", "train.epochs=4"]) == 0
    printed = capsys.readouterr().out
    resolved = yaml.safe_load(printed)
    assert resolved["train"]["epochs"] == 4 and resolved["data"]["test"] == resolved["data"]["normals"]
    assert not out.exists()


def test_every_shipped_recipe_is_valid(tmp_path, category, monkeypatch):
    """The recipes in recipes/ validate once their data paths point at real folders (and the demo
    data counts as installed)."""
    for name, data in DEMO_DATA.items():
        monkeypatch.setitem(DEMO_DATA, name, dataclasses.replace(data, check=lambda: None))
    shipped = sorted((ROOT / "recipes").glob("*.yaml"))
    assert {p.stem for p in shipped} >= {"demo", "texture_demo", "mvtec_object", "mvtec_texture", "few_shot", "few_shot_diffusion"}
    for path in shipped:
        raw = yaml.safe_load(path.read_text())
        assert path.read_text().lstrip().startswith("#"), f"{path.name} must open with a comment saying when to use it"
        overrides = [] if raw["data"]["normals"] in DEMO_DATA else [f"data.normals={category}"]
        recipe = load_recipe(path, overrides)
        assert recipe["name"]


# -- running ---------------------------------------------------------------------------------------
def test_tiny_recipe_runs_end_to_end_then_skips_finished_steps(recipe_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(recipe_file), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report' / 'index.html'}" in printed.strip().splitlines()[-1]
    steps = [line for line in printed.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] + "]" for line in steps] == [f"[{k}/8]" for k in range(1, 9)]  # no silent gaps
    assert "[2/8] fit_defects: off in this recipe, skipped" in steps

    resolved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert resolved["train"]["epochs"] == 2 and resolved["data"]["test"] == str((tmp_path / "cat").resolve())
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: v["status"] for k, v in manifest["steps"].items()} == {
        "normals": "done", "fit_defects": "off", "generate": "done", "curate": "done", "train": "done",
        "evaluate": "done", "report": "done", "publish": "off",
    }
    records = [json.loads(line) for line in (out / "curated" / "manifest.jsonl").read_text().splitlines()]
    assert 0 < len(records) <= 9 and all(r["eap"] is not None for r in records)
    assert (out / "detector" / "model" / "model.safetensors").is_file()
    assert (out / "detector" / "reference" / "config.json").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["evaluation"] == "real test split" and metrics["n_test"] == 6 and metrics["n_anomalous"] == 3
    assert set(metrics["metrics"]["image_auroc_per_defect"]) == {"dent"}
    assert 0.0 <= metrics["reference"]["metrics"]["pixel_auroc"] <= 1.0

    page = (out / "report" / "index.html").read_text()
    pictures = re.findall(r"<img src='([^']+)'", page)
    assert {"samples_cutpaste.png", "samples_draem.png", "eap_hist.png", "overlays.png"} <= set(pictures)
    assert all((out / "report" / p).is_file() for p in pictures)
    assert "normal images only" in page and "real test split" in page
    assert "Fusion: head weight" in page and "0: the normal memory alone" in page  # the chosen weights, explained
    model = out / "detector" / "model" / "model.safetensors"
    stamp = model.stat().st_mtime_ns

    # again, unchanged: every step is skipped and nothing is rewritten
    result = run_recipe(load_recipe(recipe_file), out, progress=False, echo=lambda _: None)
    assert result.ran == [] and set(result.skipped) == {"normals", "generate", "curate", "train", "evaluate", "report"}
    assert model.stat().st_mtime_ns == stamp

    # a changed training option re-runs training and what follows it, not generation or curation
    result = run_recipe(load_recipe(recipe_file, ["train.epochs=3"]), out, progress=False, echo=lambda _: None)
    assert result.ran == ["train", "evaluate", "report"] and result.skipped == ["normals", "generate", "curate"]
    assert json.loads((out / "detector" / "model" / "config.json").read_text())["config"]["epochs"] == 3
    assert yaml.safe_load((out / "recipe.yaml").read_text())["train"]["epochs"] == 3


def test_an_interrupted_run_resumes_where_it_stopped(category, tmp_path, monkeypatch):
    import detectors.run_folder
    import synth.dataset.generation

    recipe_file = write_recipe(tmp_path / "tiny.yaml", tiny_recipe(category, generate={"shard_size": 4}))
    out = tmp_path / "run"
    real_generate, real_train = synth.dataset.generation.generate_dataset, detectors.run_folder.train_run

    def stop_after_five(*args, **kwargs):
        def on_sample(index):
            if index == 4:
                raise KeyboardInterrupt

        return real_generate(*args, **kwargs, on_sample=on_sample)

    monkeypatch.setattr(synth.dataset.generation, "generate_dataset", stop_after_five)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(load_recipe(recipe_file), out, progress=False, echo=lambda _: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps"]["normals"]["status"] == "done" and manifest["steps"]["generate"]["status"] == "interrupted"
    made = [json.loads(line)["index"] for line in (out / "generated" / "manifest.jsonl").read_text().splitlines()]
    assert made == [0, 1, 2, 3]  # the first complete shard

    def interrupted_training(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth.dataset.generation, "generate_dataset", real_generate)
    monkeypatch.setattr(detectors.run_folder, "train_run", interrupted_training)
    lines = []
    with pytest.raises(KeyboardInterrupt):
        run_recipe(load_recipe(recipe_file), out, progress=False, echo=lines.append)
    assert any("generate (resuming)" in line for line in lines)
    records = [json.loads(line) for line in (out / "generated" / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in records) == list(range(12))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps"]["curate"]["status"] == "done" and manifest["steps"]["train"]["status"] == "interrupted"

    monkeypatch.setattr(detectors.run_folder, "train_run", real_train)
    result = run_recipe(load_recipe(recipe_file), out, progress=False, echo=lambda _: None)
    assert result.skipped == ["normals", "generate", "curate"] and result.ran == ["train", "evaluate", "report"]
    assert (out / "report" / "index.html").is_file() and (out / "metrics.json").is_file()
    # resumed generation equals an uninterrupted one
    fresh = tmp_path / "fresh"
    run_recipe(load_recipe(recipe_file), fresh, progress=False, echo=lambda _: None)
    strip = lambda root: [{k: v for k, v in json.loads(line).items() if k != "eap"}
                          for line in (root / "generated" / "manifest.jsonl").read_text().splitlines()]
    assert strip(out) == strip(fresh)
    assert json.loads((out / "metrics.json").read_text())["metrics"] == json.loads((fresh / "metrics.json").read_text())["metrics"]


def test_without_real_defects_a_holdout_check_and_bad_files_are_named(tmp_path):
    folder = tmp_path / "plain"
    write_images(folder, [smooth(s) for s in range(10)], "n")
    (folder / "broken.png").write_bytes(b"not a png")
    recipe = load_recipe(write_recipe(tmp_path / "plain.yaml", tiny_recipe(folder, data={"holdout": 0.3})))
    assert recipe["data"]["test"] is None
    result = run_recipe(recipe, tmp_path / "run", progress=False, echo=lambda _: None)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    normals = manifest["steps"]["normals"]["outputs"]
    assert list(normals["skipped_files"]) == [str(folder / "broken.png")] and (normals["n_train"], normals["n_holdout"]) == (7, 3)
    held = {p.name for p in (tmp_path / "run" / "normals" / "holdout").iterdir()}
    trained = {p.name for p in (tmp_path / "run" / "normals" / "train").iterdir()}
    assert len(held) == 3 and not held & trained and "broken.png" not in held | trained
    metrics = json.loads(result.metrics.read_text())
    assert metrics["evaluation"] == "synthetic hold-out check" and metrics["n_test"] - metrics["n_anomalous"] == 3
    assert metrics["n_anomalous"] > 0 and set(metrics["metrics"]["image_auroc_per_defect"]) <= {"cutpaste", "draem"}
    assert "do <b>not</b> say how the detector does on real defects" in result.report.read_text()


def test_steps_read_what_their_fingerprints_cover():
    """Every recipe section is read by some step, so a change anywhere re-runs what depends on it."""
    covered = {key.split(".")[0] for step in STEPS for key in step.keys}
    assert covered >= {"seed", "data", "fit_defects", "generate", "curate", "train", "evaluate", "publish"}


def test_the_engine_and_the_worker_count_do_not_re_run_a_step():
    from anomalyforge.pipeline import fingerprint
    from anomalyforge.recipe import defaults

    base = defaults()
    moved = defaults()
    moved["generate"].update(engine="ray", ray_address="ray://head:10001", workers=16)
    moved["curate"].update(engine="ray", ray_address="auto")
    changed = defaults()
    changed["curate"]["top_fraction"] = 0.3
    for step in STEPS:
        assert fingerprint(step, moved, {}) == fingerprint(step, base, {}), step.name
    curate_step = next(step for step in STEPS if step.name == "curate")
    assert fingerprint(curate_step, changed, {}) != fingerprint(curate_step, base, {})


def test_few_shot_recipe_without_diffusion_gives_the_shots_to_the_hybrid(category, tmp_path):
    recipe = tiny_recipe(category, fit_defects={"enabled": True, "shots": 2, "backend": "none"}, curate={"top_fraction": 1.0},
                         train={"shots": True})
    run = run_recipe(load_recipe(write_recipe(tmp_path / "few.yaml", recipe)), tmp_path / "run", progress=False,
                     echo=lambda _: None)
    manifest = json.loads((run.root / "manifest.json").read_text())
    drawn = manifest["steps"]["fit_defects"]["outputs"]
    assert drawn["model"] is None and drawn["defects"] == ["dent"] and len(drawn["shots"]) == 2
    assert not (run.root / "defects").exists()  # no diffusion model
    trained = manifest["steps"]["train"]["outputs"]
    assert trained["n_shots"] == 2
    fusion = trained["fusion"]
    assert {"transplant-a", "transplant-b"} <= set(fusion["generators"]) and fusion["shots"]["n"] == 2
    metrics = json.loads(run.metrics.read_text())
    assert metrics["n_anomalous"] == 1  # three dents, two of them shots
    page = run.report.read_text()
    assert "2 real defects of 1 defect types (dent) were drawn" in page and "transplanted the 2 real defects" in page
    # the report says how far each generator's samples are from the two shots
    realism = manifest["steps"]["report"]["outputs"]["realism"]
    assert realism["n_shots"] == 2 and set(realism["two_sample_auroc"]) == set(realism["samples"]) == set(recipe["generate"]["generators"])
    assert all(v is None or 0.0 <= v <= 1.0 for v in realism["two_sample_auroc"].values())
    assert "two-sample AUROC against the real defects" in page
    # without train.shots the hybrid does not get them
    recipe["train"]["shots"] = False
    run = run_recipe(load_recipe(write_recipe(tmp_path / "few.yaml", recipe)), tmp_path / "run2", progress=False,
                     echo=lambda _: None)
    manifest = json.loads((run.root / "manifest.json").read_text())
    assert manifest["steps"]["train"]["outputs"]["n_shots"] == 0
    assert not any(g.startswith("transplant") for g in manifest["steps"]["train"]["outputs"]["fusion"].get("generators", []))


def test_few_shot_recipe_learns_defects_leaves_the_shots_out_and_publishes(category, tmp_path, monkeypatch):
    import curate.publish

    published = {}

    def fake_publish(folder, repo_id, private=False, license=None, **kwargs):
        published.update(folder=Path(folder), repo=repo_id, private=private, license=license)
        return f"https://huggingface.co/datasets/{repo_id}"

    monkeypatch.setattr(curate.publish, "publish_dataset", fake_publish)
    tiny_scratch = {"resolution": 16, "min_window": 12, "block_out_channels": [8, 16], "batch_size": 2, "train_steps": 3,
                    "num_inference_steps": 2, "checkpoint_every": 2}
    recipe = tiny_recipe(
        category,
        fit_defects={"enabled": True, "shots": 1, "preview": 1, "options": tiny_scratch},
        generate={"n": 8, "generators": {"cutpaste": {"weight": 1}, "diffusion": {"weight": 3}}},
        curate={"top_fraction": 1.0},
        data={"license": "CC-BY-4.0"},
        publish={"repo": "someone/tiny-defects", "private": True},
    )
    run = run_recipe(load_recipe(write_recipe(tmp_path / "few.yaml", recipe)), tmp_path / "run", progress=False,
                     echo=lambda _: None)
    manifest = json.loads((run.root / "manifest.json").read_text())
    fitted = manifest["steps"]["fit_defects"]["outputs"]
    assert fitted["defects"] == ["dent"] and len(fitted["shots"]) == 1
    assert (run.root / "defects" / "generator.json").is_file()
    generators = {json.loads(line)["generator"] for line in (run.root / "generated" / "manifest.jsonl").read_text().splitlines()}
    assert "diffusion" in generators
    metrics = json.loads(run.metrics.read_text())
    assert metrics["n_test"] == 5 and metrics["n_anomalous"] == 2  # the shot is not a test image
    assert "few-shot defects left out" in metrics["evaluation"]
    page = run.report.read_text()
    assert "<img src='defects.png'" in page and (run.root / "report" / "defects.png").is_file()
    # one shot: too few for the two-sample test, and the report says so instead of failing
    assert manifest["steps"]["report"]["outputs"]["realism"] == {"n_shots": 1, "samples": {}, "two_sample_auroc": None}
    assert "needs at least two real defects, and there were 1" in page
    assert published == {"folder": run.root / "curated", "repo": "someone/tiny-defects", "private": True, "license": "CC-BY-4.0"}
    assert manifest["steps"]["publish"]["outputs"]["url"].endswith("someone/tiny-defects")


def test_the_keys_table_in_recipes_readme_is_the_schemas():
    """recipes/README.md shows the schema's keys, defaults and meanings; regenerate it with
    ``python -c "from anomalyforge.recipe import keys_table; print(keys_table())"``."""
    from anomalyforge.recipe import SCHEMA, defaults, keys_table

    readme = (Path(__file__).resolve().parents[1] / "recipes" / "README.md").read_text()
    assert keys_table() in readme
    for section, entries in SCHEMA.items():  # every key of the default recipe has a row
        for key in (entries if isinstance(entries, dict) else [None]):
            assert f"| `{section}.{key}` |" in readme if key else f"| `{section}` |" in readme
    assert set(defaults()) == set(SCHEMA)


def test_each_step_reads_the_keys_the_schema_gives_it():
    from anomalyforge.pipeline import STEPS
    from anomalyforge.recipe import defaults, keys_read_by

    recipe = defaults()
    for step in STEPS:
        assert step.keys == keys_read_by(step.name)
        for key in step.keys:  # every key a step reads is in the recipe
            section, _, name = key.partition(".")
            assert section in recipe and (not name or name in recipe[section])
    assert dict((s.name, set(s.keys)) for s in STEPS)["generate"] == {
        "seed", "data.license", "generate.n", "generate.format", "generate.shard_size", "generate.p_unchanged",
        "generate.generators"}
