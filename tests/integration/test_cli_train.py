"""`learnkit train`, `learnkit lr-find` and `learnkit predict` on the committed fortunes sample: the promised
files are written, predictions are one line per input, and bad input is one clear line with exit status 2."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import learnkit
from learnkit import cli

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FORTUNES = REPO / "datasets" / "fortunes-sample" / "fortunes.csv"
with open(FORTUNES, newline="", encoding="utf-8") as _f:
    LABELS = {row["label"] for row in csv.DictReader(_f)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small training run (awd_lstm, small config, 1 epoch, fixed lr), shared by the predict tests."""
    out = tmp_path_factory.mktemp("train") / "tmp"
    code = cli.main(["train", str(FORTUNES), "--epochs", "1", "--lr", "1e-2", "--no-progress", "--out", str(out)])
    assert code == 0
    return out


def _one_error_line(capsys, code: int, *expected: str) -> str:
    assert code == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


def test_train_writes_loss_plot_model_and_run_record(trained, capsys):
    for name in ("loss.png", "run.json", "model/recipe.json", "model/weights.safetensors"):
        assert (trained / name).is_file() and (trained / name).stat().st_size > 0, name
    assert not (trained / "lr_find.png").exists()  # a fixed --lr runs no finder
    record = json.loads((trained / "run.json").read_text())
    assert "accuracy" in record["metrics"]
    assert record["lr"] == 1e-2 and record["lr_find"] is None
    assert record["args"]["epochs"] == 1 and record["args"]["arch"] == "awd_lstm"
    assert record["model_config"] == {"emb_size": 128, "hidden_size": 256, "n_layers": 2}
    assert record["versions"]["learnkit"] == learnkit.__version__
    assert set(record["data"]["classes"]) == LABELS
    assert record["seconds"]["total"] > 0


def test_train_with_lr_auto_uses_the_valley(tmp_path, capsys):
    out = tmp_path / "auto"
    assert cli.main(["train", str(FORTUNES), "--epochs", "1", "--lr", "auto", "--no-progress",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lr_find: valley" in printed and "accuracy" in printed
    assert (out / "lr_find.png").is_file() and (out / "loss.png").is_file()
    record = json.loads((out / "run.json").read_text())
    assert record["lr"] == record["lr_find"]["valley"] > 0
    assert "accuracy" in record["metrics"]


def test_lr_find_prints_three_suggestions_and_saves_the_plot(tmp_path, capsys):
    assert cli.main(["lr-find", str(FORTUNES), "--no-progress", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert all(word in printed for word in ("valley", "minimum", "steepest"))
    assert (tmp_path / "lr_find.png").is_file()


def test_predict_prints_one_line_per_input(trained, tmp_path, capsys):
    note = tmp_path / "note.txt"
    note.write_text("The computer crashed again and the program lost all my files.", encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["predict", str(trained / "model"), str(note), "--text", "Love is a many-splendored thing.",
                     "--text", "Congress passed the bill."]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    names = []
    for line in lines:
        name, label, probability = line.split("\t")
        names.append(name)
        assert label in LABELS
        assert len(probability.split(".")[1]) == 4 and 0 < float(probability) <= 1
    assert names == [str(note), "text-1", "text-2"]


def test_predict_errors_are_one_line(trained, tmp_path, capsys):
    _one_error_line(capsys, cli.main(["predict", str(tmp_path / "no-model"), "--text", "hi"]), "recipe.json not found")
    _one_error_line(capsys, cli.main(["predict", str(trained / "model"), str(tmp_path / "missing.txt")]),
                    "missing.txt: no such file")
    _one_error_line(capsys, cli.main(["predict", str(trained / "model")]), "nothing to classify")
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / "recipe.json").write_bytes((trained / "model" / "recipe.json").read_bytes())
    weights = bytearray((trained / "model" / "weights.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (tampered / "weights.safetensors").write_bytes(bytes(weights))
    _one_error_line(capsys, cli.main(["predict", str(tampered), "--text", "hi"]), "sha256")


def test_train_data_errors_are_one_line(tmp_path, capsys):
    out = str(tmp_path / "out")
    _one_error_line(capsys, cli.main(["train", str(tmp_path / "missing.csv"), "--out", out]), "no such file")
    images = tmp_path / "images"
    images.mkdir()
    _one_error_line(capsys, cli.main(["train", str(images), "--out", out]), "no image files", str(images))
    _one_error_line(capsys, cli.main(["train", str(FORTUNES), "--text-col", "body", "--out", out]),
                    "no column(s) ['body']", "--text-col")
    _one_error_line(capsys, cli.main(["train", str(FORTUNES), "--arch", str(tmp_path / "no-arch"), "--out", out]),
                    "--arch", "no-arch")
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n", encoding="utf-8")
    _one_error_line(capsys, cli.main(["train", str(empty), "--out", out]), "no rows")
    assert not (tmp_path / "out" / "model").exists()


@pytest.mark.parametrize("argv, expected", [
    (["train", str(FORTUNES), "--lr", "fast"], "--lr: expected 'auto' or a positive number, got 'fast'"),
    (["train", str(FORTUNES), "--lr", "-1"], "--lr: expected 'auto' or a positive number"),
    (["train", str(FORTUNES), "--valid-pct", "1.5"], "--valid-pct: expected a number between 0 and 1"),
    (["train"], "the following arguments are required: PATH"),
    (["lr-find", str(FORTUNES), "--epochs", "1"], "unrecognized arguments: --epochs"),
    (["predict"], "the following arguments are required: MODEL"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, expected, capsys):
    _one_error_line(capsys, cli.main(argv), expected)
