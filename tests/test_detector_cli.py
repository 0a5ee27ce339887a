import csv
import json
import os
import re
import shutil
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import smooth, with_defect, write_rgb

from anomalyforge.cli import main
from detectors import load_detector

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
    assert re.search(r"in \d+ s on \d+ threads", out)  # the thread count chosen for this machine
    from detectors.hybrid import describe_fusion

    assert describe_fusion(info["fusion"]) in out
    assert (run / "model" / "model.safetensors").is_file() and (run / "reference" / "config.json").is_file()

    assert main(["evaluate", "--model", str(run), "--data", str(category), "--overlays", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("hybrid: image AUROC") and "knn reference: image AUROC" in out
    report = json.loads((run / "eval" / "metrics.json").read_text())
    assert report["n_test"] == 8 and report["n_anomalous"] == 4
    assert set(report["metrics"]) >= {"image_auroc", "pixel_auroc", "au_pro", "pixel_ap", "image_auroc_per_defect",
                                        "pixel_auroc_per_defect"}
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
    assert info["n_ready_anomalies"] == 12 and Path(info["data"]) == category
    # sources relative to the folder given, and each anomaly traced back to its normal image
    sources = [json.loads(line)["source"] for line in (generated / "manifest.jsonl").read_text().splitlines()]
    assert all(source.startswith("train/good/") for source in sources)
    from detectors.data import load_generated_anomalies, load_normals

    normals = load_normals(category, load_detector(run).size_rule)
    anomalies = load_generated_anomalies(generated, normals.shape, normal_paths=normals.paths)
    assert all(a.source is not None for a in anomalies)
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


def test_calibrate_puts_the_threshold_between_normal_and_synthetic_scores():
    from detectors.calibration import calibrate, normalize

    rng = np.random.default_rng(0)
    normal, anomalous = rng.normal(1.0, 0.1, 200), rng.normal(3.0, 0.3, 50)
    record = calibrate(normal, anomalous, target_fpr=0.05)
    assert np.quantile(normal, 0.9) < record["threshold"] < anomalous.min()
    assert record["held_out_fpr"] <= 0.05 and record["synthetic_recall"] == 1.0
    assert normal.max() <= record["threshold_f1"] < anomalous.min() and record["f1_on_synthetic"] == 1.0
    assert normalize(np.array([record["threshold"]]), record["threshold"], record["score_range"])[0] == 0.5
    assert normalize(np.array([-1e9, 1e9]), record["threshold"], record["score_range"]).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="target_fpr"):
        calibrate(normal, anomalous, target_fpr=0.0)
    assert record["threshold_basis"] == "at most 5.0% of 200 held-out normal images score above it"


def test_a_threshold_on_too_few_held_out_normals_says_so():
    from anomalyforge.run_report import _calibration_note
    from detectors.calibration import calibrate

    few = calibrate(np.array([1.0, 1.2, 0.9, 1.1, 1.05, 0.95]), np.array([3.0]), target_fpr=0.01)
    assert few["threshold"] == 1.2 and few["normals_needed"] == 100
    assert few["threshold_basis"] == ("the highest score of the 6 held-out normal images: too few to resolve a 1.0% "
                                      "false-reject target, which needs at least 100")
    assert "too few to resolve a 1.0%" in _calibration_note({**few, "held_out_images": ["a.png"] * 6})
    assert calibrate(np.linspace(0, 1, 100), np.array([3.0]), target_fpr=0.01)["threshold_basis"].startswith("at most 1.0% of 100")


def test_train_calibrates_predict_scores_a_folder_and_onnx_matches(category, tmp_path, capsys):
    import onnxruntime

    from detectors.sizing import resize_to

    run = tmp_path / "run"
    # tiled: the backbone runs in 32 px windows overlapping by 16 (3 x 3 over a 64 px input), the reference too
    assert main(["train", "--data", str(category), "--synth", "draem,cutpaste", "--out", str(run), "--quiet",
                 "--target-fpr", "0.05", *TINY, "tile_size=32", "tile_overlap=16", "stages=[2,4]"]) == 0
    assert "held-out normal images: too few to resolve a 5.0% false-reject target" in capsys.readouterr().out
    calibration = json.loads((run / "train.json").read_text())["calibration"]
    assert calibration["target_fpr"] == 0.05 and calibration["n_normal"] >= 2 and calibration["n_synthetic_anomalies"] > 0
    assert calibration["normal_score_quantiles"]["0.5"] <= calibration["threshold"]
    reference = load_detector(run / "reference")
    assert reference.calibration is None  # the reference is for comparison only
    # the reference sees the detector's features: the same stages and tiling
    assert (reference.stages, reference.tile_size, reference.tile_overlap) == ([2, 4], 32, 16)
    assert (load_detector(run).stages, load_detector(run).tile_size) == ([2, 4], 32)

    # predict: a folder with mixed sizes, a corrupt file and a sub-folder
    inbox = tmp_path / "inbox"
    write_rgb(inbox / "a.png", smooth(300, 64))
    write_rgb(inbox / "line2" / "b.png", cv2.resize(with_defect(smooth(301, 64), 1)[0], (96, 72)))
    write_rgb(inbox / "line2" / "c.png", smooth(302, 80))
    (inbox / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(run), "--input", str(inbox), "--out", str(out), "--masks", "--quiet"]) == 0
    assert "scored 3 images" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [Path(r["path"]).name for r in rows] == ["a.png", "b.png", "c.png"]
    detector = load_detector(run)
    for row in rows:
        score = float(row["score"])
        assert row["anomalous"] == ("true" if score > detector.threshold() else "false")
        assert 0.0 <= float(row["normalized_score"]) <= 1.0
    summary = json.loads((out / "predictions.json").read_text())
    assert list(summary["skipped_files"]) == [str(inbox / "broken.png")] and summary["threshold_source"] == "calibrated"
    assert cv2.imread(str(out / "masks" / "line2" / "b.png"), cv2.IMREAD_GRAYSCALE).shape == (72, 96)  # its own size
    overlay = cv2.imread(str(out / "overlays" / "line2" / "c.png"))  # caption, image | heat map, colour bar
    assert overlay.shape[1] >= 2 * 80 and overlay.shape[0] > 80 + 40
    # the same inbox read from an fsspec store, the outputs written to one
    import fsspec

    from synth.common.storage import Store

    for path in sorted(inbox.rglob("*.png")):
        fsspec.filesystem("memory").pipe_file(f"/{tmp_path.name}/inbox/{path.relative_to(inbox).as_posix()}", path.read_bytes())
    url = f"memory://{tmp_path.name}/pred"
    assert main(["predict", "--model", str(run), "--input", f"memory://{tmp_path.name}/inbox", "--out", url, "--masks",
                 "--quiet"]) == 0
    remote = Store(url)
    remote_rows = list(csv.DictReader(remote.read_text("predictions.csv").splitlines()))
    assert [r["score"] for r in remote_rows] == [r["score"] for r in rows]
    assert remote_rows[0]["path"] == f"memory://{tmp_path.name}/inbox/a.png"
    for name in ("masks/line2/b.png", "overlays/a.png", "overlays/line2/c.png"):
        assert remote.read_bytes(name) == (out / name).read_bytes(), name
    assert list(json.loads(remote.read_text("predictions.json"))["skipped_files"]) == [f"memory://{tmp_path.name}/inbox/broken.png"]
    remote.remove_all()
    strict = tmp_path / "strict"
    assert main(["predict", "--model", str(run), "--input", str(inbox / "*.png"), "--out", str(strict), "--threshold", "1e9",
                 "--no-maps", "--quiet"]) == 0
    rows = list(csv.DictReader((strict / "predictions.csv").open()))
    assert len(rows) == 1 and rows[0]["anomalous"] == "false" and not (strict / "overlays").exists()
    # exit codes a line controller can act on: some unreadable files (--strict), none readable (always)
    capsys.readouterr()
    assert main(["predict", "--model", str(run), "--input", str(inbox), "--out", str(tmp_path / "strict2"), "--strict",
                 "--no-maps", "--quiet"]) == 3
    assert "1 unreadable files skipped" in capsys.readouterr().out
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "cut.png").write_bytes((inbox / "a.png").read_bytes()[:200])
    assert main(["predict", "--model", str(run), "--input", str(corrupt), "--out", str(tmp_path / "none"), "--quiet"]) == 2
    assert "no image could be scored: 1 unreadable files" in capsys.readouterr().err
    # export into an existing folder writes model.onnx inside it
    folder = tmp_path / "deploy"
    folder.mkdir()
    assert main(["export", "--model", str(run), "--out", str(folder)]) == 0
    assert (folder / "model.onnx").is_file() and str(folder / "model.onnx") in capsys.readouterr().out

    # ONNX: the same scores and maps as the PyTorch detectors (tiling included), on images of several original sizes
    images = [smooth(400, 64), cv2.resize(smooth(401, 64), (90, 50)), with_defect(smooth(402, 64), 3)[0], smooth(403, 100)]
    for model_dir in (run, run / "reference"):
        detector = load_detector(model_dir)
        onnx_path = tmp_path / f"{detector.kind}.onnx"
        assert main(["export", "--model", str(model_dir), "--out", str(onnx_path)]) == 0
        batch = np.stack([resize_to(image, detector.input_shape) for image in images])
        expected = detector.predict(batch)
        session = onnxruntime.InferenceSession(str(onnx_path))
        scores, maps = session.run(None, {"images": batch})
        assert np.abs(scores - expected.scores).max() < 1e-4
        assert np.abs(maps - expected.maps).max() < 1e-3
        meta = session.get_modelmeta().custom_metadata_map
        assert json.loads(meta["input_shape"]) == list(detector.input_shape)
        if detector.calibration:
            assert float(meta["threshold"]) == detector.calibration["threshold"]
    capsys.readouterr()
    draem = tmp_path / "draem"
    assert main(["train", "--data", str(category), "--detector", "draem", "--out", str(draem), "--quiet", "--no-reference",
                 "--size", "64", "--epochs", "1", "--set", "reconstructive_width=4", "discriminative_width=4", "batch_size=4"]) == 0
    assert load_detector(draem).calibration is not None  # held out for it: calibrated like the others
    assert main(["export", "--model", str(draem), "--out", str(tmp_path / "draem.onnx")]) == 2
    assert "cannot be exported to ONNX yet" in capsys.readouterr().err


def test_an_interrupted_predict_resumes_where_it_stopped(tmp_path):
    """Rows on disk are finished images: a rerun with the same settings scores only the rest, and the
    outputs equal an uninterrupted run's; other settings start over."""
    from anomalyforge.predict import predict_paths
    from detectors import PatchKNN

    detector = PatchKNN(image_size=64, pretrained=False).fit([smooth(k, 64) for k in range(4)], progress=False)
    from detectors.calibration import calibrate

    detector.state_["calibration"] = calibrate(detector.predict([smooth(9, 64), smooth(10, 64)]).scores, np.zeros(0))
    inbox = tmp_path / "inbox"
    for k in range(5):
        write_rgb(inbox / f"p{k}.png", smooth(20 + k, 64))
    whole = tmp_path / "whole"
    predict_paths(detector, [inbox], whole, batch_size=2, progress=False)

    scored = []
    real_predict = detector.predict

    def interrupted(images, **kwargs):
        if len(scored) >= 2:
            raise KeyboardInterrupt
        scored.extend(images)
        return real_predict(images, **kwargs)

    out = tmp_path / "out"
    detector.predict = interrupted
    with pytest.raises(KeyboardInterrupt):
        predict_paths(detector, [inbox], out, batch_size=2, progress=False)
    assert json.loads((out / "predictions.json").read_text())["complete"] is False
    assert not (out / "predictions.csv").exists() and (out / "predictions.partial.csv").is_file()
    counted = []
    detector.predict = lambda images, **kwargs: counted.extend(images) or real_predict(images, **kwargs)
    report = predict_paths(detector, [inbox], out, batch_size=2, progress=False)
    assert len(counted) == 3 and report.n_images == 5 and report.n_scored == 3  # the first batch was not scored again
    assert (out / "predictions.csv").read_bytes() == (whole / "predictions.csv").read_bytes()
    assert sorted(p.name for p in (out / "overlays").iterdir()) == sorted(p.name for p in (whole / "overlays").iterdir())
    assert json.loads((out / "predictions.json").read_text())["resumed_images"] == 2
    assert not (out / "predictions.partial.csv").exists()
    counted.clear()
    predict_paths(detector, [inbox], out, batch_size=2, threshold=123.0, progress=False)  # other settings: all again
    assert len(counted) == 5


def test_train_says_what_the_fusion_weights_mean():
    from detectors.hybrid import describe_fusion

    memory_only = describe_fusion({"method": "leave-one-generator-out", "chosen": {"map": 0.0, "image": 0.0}})
    assert "did not improve on the normal memory for this data" in memory_only and "kNN" in memory_only
    mixed = describe_fusion({"method": "leave-one-generator-out", "chosen": {"map": 1.0, "image": 0.25}})
    assert mixed.startswith("head weight 1 in the map and 0.25 in the image score (chosen on held-out normals")
    assert "fixed" in describe_fusion({"method": "fixed", "chosen": {"map": 1.0, "image": 1.0}})
    assert describe_fusion(None) == ""
    flat = describe_fusion({"method": "leave-one-generator-out", "chosen": {"map": 0.5, "image": 0.0},
                            "flat": {"map": ["transplant-a", "transplant-b"], "image": []}})
    assert flat.endswith("left out of the choice: transplant-a, transplant-b (map)")



def test_train_with_a_few_real_defects(category, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(category), "--shots-from", str(category), "--shots", "2", "--no-reference",
                 "--out", str(run), "--quiet", *TINY]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 real defects from") and "keep them out of the test set" in out
    info = json.loads((run / "train.json").read_text())
    assert info["n_shots"] == 2 and {"transplant-a", "transplant-b"} <= set(info["fusion"]["generators"])
    assert main(["train", "--data", str(category), "--detector", "knn", "--shots-from", str(category),
                 "--out", str(tmp_path / "knn"), "--quiet", "--size", "64"]) == 2
    assert "knn detector does not learn from real defects" in capsys.readouterr().err
