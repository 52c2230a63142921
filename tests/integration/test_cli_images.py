"""`learnkit train FOLDER` and `learnkit predict` on the committed Fashion-MNIST PNG sample: the image
classifier is trained and exported, predictions are one line per file, bad input is one line with exit 2."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from learnkit import cli

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PNG = REPO / "datasets" / "fashion-mnist-sample" / "png"


def _small_copy(root: Path, per_class: int = 40) -> Path:
    for split, n in (("train", per_class), ("valid", per_class // 4)):
        for folder in sorted((PNG / split).iterdir()):
            (root / split / folder.name).mkdir(parents=True)
            for f in sorted(folder.glob("*.png"))[:n]:
                shutil.copy(f, root / split / folder.name / f.name)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = _small_copy(tmp_path_factory.mktemp("png"))
    out = tmp_path_factory.mktemp("runs") / "fm"
    code = cli.main(["train", str(data), "--arch", "resnet9", "--no-pretrained", "--grayscale", "--epochs", "2",
                     "--lr", "5e-3", "--batch-size", "32", "--no-progress", "--out", str(out)])
    assert code == 0
    return data, out


def test_train_on_an_image_folder_writes_plots_model_and_record(trained, capsys):
    data, out = trained
    for name in ("loss.png", "run.json", "model/recipe.json", "model/weights.safetensors"):
        assert (out / name).exists(), name
    record = json.loads((out / "run.json").read_text())
    assert record["data"]["train_items"] == 400 and record["data"]["valid_items"] == 100
    assert len(record["data"]["classes"]) == 10 and record["metrics"]["accuracy"] > 0.2  # chance: 0.1


def test_predict_prints_one_line_per_image(trained, capsys):
    data, out = trained
    files = sorted((data / "valid" / "Trouser").glob("*.png"))[:3]
    capsys.readouterr()
    assert cli.main(["predict", str(out / "model")] + [str(f) for f in files]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(line.split("\t")[0] == str(f) for line, f in zip(lines, files))
    assert all(0 < float(line.split("\t")[2]) <= 1 for line in lines)


def _one_error_line(capsys, code: int, *expected: str) -> None:
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err


def test_image_errors_are_one_line(trained, tmp_path, capsys):
    data, out = trained
    broken = _small_copy(tmp_path / "broken", per_class=4)
    (broken / "train" / "Bag" / "zero.png").write_bytes(b"")
    _one_error_line(capsys, cli.main(["train", str(broken), "--arch", "resnet9", "--no-pretrained",
                                      "--out", str(tmp_path / "o")]), "zero.png", "--skip-bad")
    _one_error_line(capsys, cli.main(["predict", str(out / "model"), "--text", "hello"]), "classifies images")
    _one_error_line(capsys, cli.main(["predict", str(out / "model"), str(tmp_path / "nope.png")]), "nope.png")
