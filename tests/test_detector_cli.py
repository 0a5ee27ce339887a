import json
import os
import shutil
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest

from anomalyforge.cli import main
from detectors import load_detector
from conftest import smooth, with_defect, write_rgb

TINY = ["--size", "64", "--epochs", "3", "--set", "hidden=32", "steps_per_epoch=3", "bank_size=300", "batch_size=8", "anomalies_per_image=2"]


@pytest.fixture
def category(tmp_path) -> Path:
    root = tmp_path / "widget"
    for i in range(10):
        write_rgb(root / "train" / "good" / f"{i:03d}.png", smooth(i))
    for i in range(4):
        write_rgb(root / "test" / "good" / f"{i:03d}.png", smooth(100 + i))
        image, mask = with_defect(smooth(200 + i), i)
        write_rgb(root / "test" / "dent" / f"{i:03d}.png", image)
        (root / "ground_truth" / "dent").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "ground_truth" / "dent" / f"{i:03d}_mask.png"), (mask * 255).astype(np.uint8))
    return root


def test_train_then_evaluate(category, tmp_path, capsys):
    (category / "train" / "good" / "broken.png").write_bytes(b"not a png")
    cv2.imwrite(str(category / "train" / "good" / "tiny.png"), np.zeros((1, 1, 3), np.uint8))
    run = tmp_path / "run"
    assert main(["train", "--data", str(category), "--synth", "draem,cutpaste", "--out", str(run), "--quiet", *TINY]) == 0
    out = capsys.readouterr().out
    assert "trained hybrid on 10 normal images" in out and "2 unusable files skipped" in out
    info = json.loads((run / "train.json").read_text())
    assert any("broken.png" in path for path in info["skipped_files"])
    assert "too small" in next(v for k, v in info["skipped_files"].items() if "tiny.png" in k)
    umask = os.umask(0)
    os.umask(umask)
    for written in (run / "model" / "model.safetensors", run / "model" / "config.json", run / "train.json"):
        assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~umask, written  # readable by a service account
    assert load_detector(run).kind == "hybrid"  # a run folder loads like its model/ folder
    assert f"kNN reference in {info['reference_train_seconds']:.0f} s" in out
    assert f"head weight {info['fusion']['chosen']['map']:g} (map)" in out
    assert (run / "model" / "model.safetensors").is_file() and (run / "reference" / "config.json").is_file()

    assert main(["evaluate", "--model", str(run), "--data", str(category), "--overlays", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("hybrid: image AUROC") and "knn reference: image AUROC" in out
    report = json.loads((run / "eval" / "metrics.json").read_text())
    assert report["n_test"] == 8 and report["n_anomalous"] == 4
    assert set(report["metrics"]) >= {"image_auroc", "pixel_auroc", "au_pro", "pixel_ap", "image_auroc_per_defect"}
    assert report["reference"]["detector"] == "knn"
    assert (run / "eval" / "overlays.png").is_file() and len(list((run / "eval" / "overlays").glob("*.png"))) == 4
    rows = report["images"]
    assert [(Path(r["path"]).parent.name, r["label"]) for r in rows].count(("dent", 1)) == 4 and len(rows) == 8
    assert {r["defect"] for r in rows} == {"good", "dent"} and all(isinstance(r["score"], float) for r in rows)
    assert all("reference_score" in r for r in rows)

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    assert main(["evaluate", "--model", str(run), "--data", str(category), "--out", str(mine), "--quiet"]) == 2
    assert "not empty and holds no evaluation" in capsys.readouterr().err
    assert main(["train", "--data", str(category), "--out", str(mine), "--quiet", *TINY]) == 2
    assert "not empty and holds no detector run" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    shutil.rmtree(category / "ground_truth")  # image labels only: image metrics, no pixel metrics
    assert main(["evaluate", "--model", str(run), "--data", str(category), "--out", str(tmp_path / "labels"), "--quiet"]) == 0
    assert "no defect masks: image metrics only" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "labels" / "metrics.json").read_text())["metrics"]
    assert metrics["image_auroc"] == report["metrics"]["image_auroc"] and metrics["pixel_auroc"] is None

    shutil.rmtree(category / "test" / "dent")  # good images only: say what is missing, write nothing
    assert main(["evaluate", "--model", str(run), "--data", str(category), "--out", str(tmp_path / "good"), "--quiet"]) == 2
    assert "holds only good images" in capsys.readouterr().err and not (tmp_path / "good").exists()


def test_train_on_a_generated_dataset(category, tmp_path, capsys):
    generated = tmp_path / "gen"
    assert main(["generate", "--input", str(category), "--out", str(generated), "--generator", "draem", "--n", "12", "--quiet"]) == 0
    run = tmp_path / "run"
    assert main(["train", "--data", str(generated), "--out", str(run), "--no-reference", "--quiet", *TINY]) == 0
    info = json.loads((run / "train.json").read_text())
    assert info["n_ready_anomalies"] == 12 and Path(info["data"]) == category / "train" / "good"
    assert info["config"]["synth"] == "none"
    assert not (run / "reference").exists()


def test_cli_errors_name_the_problem(category, tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "missing is not a folder" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(category)]) == 2
    assert "config.json is missing" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path / "nonexistent"), "--data", str(category)]) == 2
    assert "nonexistent does not exist" in capsys.readouterr().err
    assert main(["train", "--data", str(category), "--out", str(tmp_path / "r"), "--set", "hiden=512"]) == 2
    err = capsys.readouterr().err
    assert "--set hiden: unknown hybrid detector option" in err and "hidden" in err.split("known options:")[1]
    assert main(["train", "--data", str(category), "--out", str(tmp_path / "r"), "--set", "hidden=abc"]) == 2
    assert "hidden must be an integer" in capsys.readouterr().err
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    cv2.imwrite(str(tiny / "a.png"), np.zeros((1, 1, 3), np.uint8))
    assert main(["train", "--data", str(tiny), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "no usable normal images" in err and "a.png" in err and "too small" in err
    assert not (tmp_path / "r").exists()
    assert main(["train", "--data", str(category), "--out", str(tmp_path / "r"), "--set", "nokey"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
