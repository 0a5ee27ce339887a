import json
import subprocess
import sys

import cv2
import pytest
from conftest import textured

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
