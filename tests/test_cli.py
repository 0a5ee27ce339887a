import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import textured, write_rgb

from anomalyforge.cli import main


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "normal"
    folder.mkdir()
    for k in range(4):
        cv2.imwrite(str(folder / f"{k}.png"), textured(64, 72, seed=k))
    return folder


@pytest.mark.parametrize("generator", ["cutpaste", "nsa", "draem", "mix"])
def test_generate_each_generator_and_preview(tmp_path, folder, generator, capsys):
    out = tmp_path / generator
    code = main(["generate", "--input", str(folder), "--generator", generator, "--n", "6", "--seed", "1",
                 "--out", str(out), "--quiet", "--format", "hf" if generator == "mix" else "mvtec"])
    assert code == 0
    assert "wrote 6 samples" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 6
    if generator != "mix":
        assert {r["generator"] for r in records} == {generator}
    assert main(["preview", str(out), "--n", "6"]) == 0
    sheet = cv2.imread(str(out / "preview.png"))
    assert sheet is not None and sheet.shape[0] > 100 and sheet.shape[1] > 300


def test_clear_errors(tmp_path, folder, capsys):
    assert main(["generate", "--input", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "missing does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["generate", "--input", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "holds no images" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--input", str(folder), "--out", str(tmp_path / "o"), "--generator", "gan"])
    assert exit_info.value.code == 2 and "invalid choice: 'gan'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--input", str(folder), "--out", str(tmp_path / "o"), "--n", "0"])
    assert "must be at least 1" in capsys.readouterr().err
    assert main(["generate", "--input", str(folder), "--out", str(tmp_path / "o"), "--generator", "mix",
                 "--weights", "cutpaste=1,gan=2", "--quiet"]) == 2
    assert "unknown generator 'gan'" in capsys.readouterr().err


def test_console_script_runs_the_demo(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "anomalyforge.cli", "demo", "--out", str(tmp_path / "demo"), "--n", "8", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "preview sheet:" in result.stdout
    assert (tmp_path / "demo" / "preview.png").is_file()
    assert len(list((tmp_path / "demo" / "normal").glob("*.png"))) == 12


def test_generate_skips_an_image_too_small_and_still_makes_n(tmp_path, folder, capsys):
    cv2.imwrite(str(folder / "tiny.png"), np.zeros((1, 1, 3), np.uint8))
    out = tmp_path / "out"
    assert main(["generate", "--input", str(folder), "--generator", "cutpaste", "--n", "12", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert "wrote 12 samples" in printed.out and "1 unusable input files skipped" in printed.out
    assert (printed.out + printed.err).count("tiny.png") == 1  # named once
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 12 and not any("tiny" in r["source"] for r in records)
    info = json.loads((out / "dataset.json").read_text())
    assert info["complete"] and "too small" in next(iter(info["skipped_files"].values()))


def test_generate_with_no_usable_image_leaves_no_output(tmp_path, capsys):
    folder = tmp_path / "tiny"
    folder.mkdir()
    for k in range(2):
        cv2.imwrite(str(folder / f"{k}.png"), np.zeros((4, 3, 3), np.uint8))
    out = tmp_path / "out"
    assert main(["generate", "--input", str(folder), "--generator", "draem", "--n", "5", "--out", str(out), "--quiet"]) == 2
    assert "none of the 2 input images is usable" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("fmt", ["mvtec", "hf"])
def test_generate_grows_a_dataset_and_names_every_difference(tmp_path, folder, fmt, capsys):
    from synth.dataset.reader import read_generated

    common = ["generate", "--input", str(folder), "--generator", "cutpaste", "--seed", "3", "--format", fmt,
              "--shard-size", "4", "--quiet"]
    grown, fresh = tmp_path / "grown", tmp_path / "fresh"
    assert main(common + ["--n", "6", "--out", str(grown)]) == 0
    assert main(common + ["--n", "10", "--out", str(grown)]) == 0
    kept = 6 if fmt == "mvtec" else 4  # hf remakes the samples of a partial last shard
    assert f"{kept} were already there" in capsys.readouterr().out
    assert main(common + ["--n", "10", "--out", str(fresh)]) == 0
    a, b = list(read_generated(grown)), list(read_generated(fresh))
    assert [s.record["index"] for s in a] == list(range(10)) == [s.record["index"] for s in b]
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask)
    capsys.readouterr()
    assert main(common[:6] + ["4"] + common[7:] + ["--n", "5", "--out", str(grown)]) == 2
    err = capsys.readouterr().err
    assert "n: 10 there, 5 now" in err and "seed: 3 there, 4 now" in err


def test_every_option_of_every_command_has_a_help_line():
    import argparse

    from anomalyforge.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = [f"{name} {action.option_strings or action.dest}" for name, sub in commands.items()
               for action in sub._actions if not action.help]
    assert not missing


def test_cutpaste_default_variant_is_set_once():
    """The class holds the default; the registry, the CLI and the recipes take it from there."""
    import inspect

    from anomalyforge.cli import build_parser
    from synth import CutPaste
    from synth.registry import build_generator

    default = inspect.signature(CutPaste).parameters["variant"].default
    assert build_generator("cutpaste").variant == default
    generate = build_parser()._subparsers._group_actions[0].choices["generate"]
    variant = next(action for action in generate._actions if action.dest == "variant")
    assert variant.default is None and f"default: {default}" in variant.help


def test_every_help_line_states_its_default_and_presets_default_to_auto():
    import argparse

    from anomalyforge.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, parser in sub.choices.items():
        for action in parser._actions:
            if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction)):
                continue
            if action.default in (None, False, []):
                continue
            if "default" not in (action.help or "") or str(action.default) not in action.help:
                missing.append(f"{name} {action.option_strings[0]}")
            if action.dest == "preset":
                assert action.default == "auto", name
    assert missing == []


def test_messages_say_the_problem_once_in_our_words(tmp_path, capfd):
    from synth.common.readers import mvtec_test_images

    good = tmp_path / "in"
    for k in range(3):
        write_rgb(good / f"n{k}.png", textured(48, 48, seed=k))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cut.png").write_bytes((good / "n0.png").read_bytes()[:200])  # a truncated PNG
    assert main(["generate", "--input", str(bad), "--out", str(tmp_path / "none"), "--n", "2", "--quiet"]) == 2
    err = capfd.readouterr().err
    assert "cut.png: truncated PNG" in err and "libpng" not in err and "sample 0 failed" not in err
    # a folder holding another run: the settings that differ, not whole configs
    out = tmp_path / "out"
    assert main(["generate", "--input", str(good), "--out", str(out), "--n", "3", "--quiet"]) == 0
    assert main(["generate", "--input", str(good), "--out", str(out), "--n", "3", "--quiet", "--variant", "scar"]) == 2
    err = capfd.readouterr().err
    assert "generator_config.generators[cutpaste].variant: 'union' there, 'scar' now" in err and len(err) < 400
    # paths that do not exist are said to be so
    assert main(["preview", str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'} does not exist" in capfd.readouterr().err
    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        mvtec_test_images(tmp_path / "nope")
    # a misspelt option gets a suggestion
    assert main(["train", "--data", str(good), "--out", str(tmp_path / "run"), "--quiet", "--set", "epoch=3"]) == 2
    assert "did you mean 'epochs'?" in capfd.readouterr().err


def test_a_predict_picture_explains_itself():
    """Caption, the image in its own colours beside its heat map, and the map's colour scale."""
    from synth.common.pictures import captioned_heatmap

    image = np.zeros((60, 90, 3), np.uint8)
    image[:] = (230, 200, 20)  # a yellow part: a heat map blended over it would turn it grey
    scores = np.zeros((60, 90), np.float32)
    scores[20:30, 40:50] = 5.0
    picture = captioned_heatmap(image, scores, "part.png: ANOMALOUS; score 3.1 (threshold 2.0), normalised 0.8", 0.0, 5.0)
    rows = [y for y in range(picture.shape[0]) if (picture[y, :90] == (230, 200, 20)).all()]
    assert len(rows) == 60 and rows == list(range(rows[0], rows[0] + 60))  # the image untouched, left
    top, bottom = picture[: rows[0]], picture[rows[-1] + 1 :]
    assert (top < 128).any()  # the caption's text
    heat = picture[rows[0] : rows[-1] + 1, 94:184]
    assert not (heat == (230, 200, 20)).all(axis=2).any()  # the overlay beside it
    bar = bottom[6]  # the colour scale: blue to red
    assert bar[10, 2] > 100 and bar[-20, 0] > 100 and len({tuple(c) for c in bar}) > 50


def test_progress_bars_in_a_log_update_rarely(tmp_path):
    """Redirected to a file (not a terminal), a long command's bars write a line now and then, not
    a refresh every tenth of a second."""
    import os

    for k in range(4):
        write_rgb(tmp_path / "in" / f"n{k}.png", textured(64, 64, seed=k))
    env = {key: value for key, value in os.environ.items() if not key.startswith("TQDM_")}
    done = subprocess.run(
        [sys.executable, "-m", "anomalyforge.cli", "generate", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
         "--generator", "draem", "--n", "300"], capture_output=True, text=True, env=env, check=True,
    )
    refreshes = done.stderr.count("\r") + done.stderr.count("\n")
    assert "300/300" in done.stderr and refreshes <= 4, done.stderr[-500:]
