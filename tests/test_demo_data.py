"""The demo data a recipe names (``elpv``, ``embedded``): the solar-cell split, a missing package,
and a run on cells with image labels only. The elpv package itself is not needed: a small folder in
its layout (``labels.csv`` and ``images/``) stands in for it."""

import importlib.util
import json
from pathlib import Path

import cv2
import pytest
from conftest import smooth, with_defect
from test_recipes import tiny_recipe, write_recipe

import anomalyforge.demo as demo
from anomalyforge.cli import main
from anomalyforge.pipeline import run_recipe
from anomalyforge.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def fake_elpv(root: Path) -> Path:
    """An elpv-layout folder: 12 good and 5 defective mono cells, mono cells the experts were unsure
    of (1/3, 2/3), and poly cells."""
    (root / "images").mkdir(parents=True)
    lines = []
    groups = [("mono", 0.0, 12), ("mono", 1.0, 5), ("mono", 0.3333333333333333, 2), ("mono", 0.6666666666666666, 2),
              ("poly", 0.0, 4), ("poly", 1.0, 2)]
    k = 0
    for kind, probability, count in groups:
        for _ in range(count):
            k += 1
            image = smooth(k)[..., 0]
            if probability > 0:
                image = with_defect(image, k)[0]
            cv2.imwrite(str(root / "images" / f"cell{k:04d}.png"), image)
            lines.append(f"images/cell{k:04d}.png  {probability:<18} {kind}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def small_demo(monkeypatch, tmp_path):
    """The fake elpv folder as the installed data, with a demo split that fits it."""
    root = fake_elpv(tmp_path / "elpv_data")
    monkeypatch.setattr(demo, "elpv_root", lambda: root)
    monkeypatch.setattr(demo, "N_TRAIN_CELLS", 8)
    monkeypatch.setattr(demo, "N_TEST_GOOD_CELLS", 3)
    monkeypatch.setattr(demo, "N_TEST_DEFECTIVE_CELLS", 3)
    return root


def labels_of(root: Path) -> dict[str, tuple[float, str]]:
    return {c.path.name: (c.probability, c.type) for c in demo.read_cells(root)}


def test_the_demo_cells_are_a_seeded_split_of_one_type_without_the_unsure_ones(small_demo, tmp_path):
    labels = labels_of(small_demo)
    train, test = demo.write_solar_cells(tmp_path / "a", seed=0)
    assert train == tmp_path / "a" / "train" / "good" and test == tmp_path / "a"
    parts = {part: sorted(p.name for p in (test / part).iterdir()) for part in ("train/good", "test/good", "test/defective")}
    assert [len(parts[p]) for p in parts] == [8, 3, 3]
    assert not set(parts["train/good"]) & set(parts["test/good"])
    assert all(labels[name] == (0.0, "mono") for name in parts["train/good"] + parts["test/good"])
    assert all(labels[name] == (1.0, "mono") for name in parts["test/defective"])
    assert not (test / "ground_truth").exists()  # image labels only
    again = demo.write_solar_cells(tmp_path / "b", seed=0)[1]
    assert parts == {part: sorted(p.name for p in (again / part).iterdir()) for part in parts}
    other = demo.write_solar_cells(tmp_path / "c", seed=1)[1]
    assert parts != {part: sorted(p.name for p in (other / part).iterdir()) for part in parts}


def test_too_few_cells_or_a_bad_label_line_are_named(small_demo, monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "N_TRAIN_CELLS", 11)
    with pytest.raises(ValueError, match="12 good and 5 defective mono cells; the demo needs 14 and 3"):
        demo.write_solar_cells(tmp_path / "a", seed=0)
    labels = small_demo / "labels.csv"
    labels.write_text(labels.read_text() + "images/cell9999.png  maybe mono\n")
    with pytest.raises(ValueError, match=r"labels.csv, line 28: expected 'path probability type'"):
        demo.read_cells(small_demo)


def test_without_the_demo_package_the_demo_recipe_is_one_line_saying_how_to_install(monkeypatch, tmp_path, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == demo.ELPV_PACKAGE else find_spec(name, *a))
    out = tmp_path / "run"
    assert main(["run", str(ROOT / "recipes" / "demo.yaml"), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "data.normals" in error and 'pip install "anomalyforge[demo]"' in error
    assert not out.exists()


def test_a_run_on_the_solar_cells_is_evaluated_on_the_labelled_cells(small_demo, tmp_path):
    recipe = tiny_recipe(Path("unused"), data={"normals": "elpv", "preset": "auto"})
    recipe = load_recipe(write_recipe(tmp_path / "cells.yaml", recipe))
    assert recipe["data"]["preset"] == "texture" and recipe["data"]["test"] is None
    result = run_recipe(recipe, tmp_path / "run", progress=False, echo=lambda _: None)
    normals = json.loads((tmp_path / "run" / "manifest.json").read_text())["steps"]["normals"]["outputs"]
    assert (normals["n_train"], normals["n_holdout"]) == (8, 0)  # the test split is real: nothing held out
    metrics = json.loads(result.metrics.read_text())
    assert metrics["evaluation"] == "real test split" and (metrics["n_test"], metrics["n_anomalous"]) == (6, 3)
    assert metrics["metrics"]["pixel_auroc"] is None and metrics["metrics"]["image_auroc"] is not None
    assert {"false_reject_rate", "recall"} <= set(metrics["decision"])
    labels = labels_of(small_demo)
    tested = [Path(row["path"]).name for row in metrics["images"]]
    assert all(labels[name][1] == "mono" and labels[name][0] in (0.0, 1.0) for name in tested)
    page = result.report.read_text()
    assert "no masks (image labels only)" in page and "of the defect images found" in page and "overlays.png" in page
    assert "solar cells" in page
