"""`learnkit demo`: trains on the shipped Fashion-MNIST PNG sample and writes every promised file; bad
arguments and a missing sample are one clear line and a non-zero exit, never a traceback."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import learnkit
from learnkit import cli, load_learner
from learnkit.cli import demo as cli_demo

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PNG = cli_demo.SAMPLE_DIR


def test_demo_writes_plots_model_and_run_record(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path), "--epochs", "1", "--no-progress"]) == 0
    files = ("show_batch.png", "lr_find.png", "loss.png", "sched.png", "confusion_matrix.png", "top_losses.png",
             "run.json", "model/recipe.json", "model/weights.safetensors")
    for name in files:
        assert (tmp_path / name).is_file(), f"demo did not write {name}"
        assert (tmp_path / name).stat().st_size > 0
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["metrics"]["accuracy"] > 0.5, record["metrics"]
    assert record["seed"] == 0 and record["epochs"] == 1
    assert record["versions"]["learnkit"] == learnkit.__version__
    assert record["lr"] == record["lr_find"]["valley"] > 0
    assert record["sample"]["train_items"] == 2000 and record["sample"]["valid_items"] == 500
    assert len(record["sample"]["sha256"]) == 64
    assert record["seconds"]["total"] > 0
    matrix = record["confusion_matrix"]["rows_actual_cols_predicted"]
    assert sum(map(sum, matrix)) == 500
    # It says where everything went: one line per artefact, naming the file.
    out = capsys.readouterr().out
    for name in record["files"]:
        assert sum(line.strip().startswith(f"{tmp_path / name.rstrip('/')}  ") for line in out.splitlines()) == 1, \
            (name, out)
    assert "accuracy" in out and "learnkit predict" in out

    # The exported model is an image model: it predicts on PNG files, from Python and from the command line.
    predictor = load_learner(tmp_path / "model")
    classes = sorted(d.name for d in (PNG / "train").iterdir() if d.is_dir())
    assert predictor.classes == classes
    bags = sorted((PNG / "valid" / "Bag").glob("*.png"))[:20]
    labels, probs = predictor.predict_batch(bags)
    assert probs.shape == (20, 10) and torch.allclose(probs.sum(1), torch.ones(20), atol=1e-4)
    assert labels.count("Bag") >= 10, labels  # a 1-epoch model still knows most bags
    assert cli.main(["predict", str(tmp_path / "model"), str(bags[0]), str(bags[1])]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(bags[0]), str(bags[1])]
    assert [line.split("\t")[1] for line in lines] == labels[:2]
    # A text for an image model: the error names what the model takes.
    assert cli.main(["predict", str(tmp_path / "model"), "--text", "a bag"]) == 2
    err = capsys.readouterr().err
    assert "classifies images" in err and "pass image files" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, expected", [
    (["demo", "--epochs", "0"], "--epochs: expected a positive integer, got 0"),
    (["demo", "--epochs", "three"], "--epochs: expected a positive integer, got 'three'"),
    (["demo", "--seed", "-1"], "--seed: expected a seed"),
    (["demo", "--bogus"], "unrecognized arguments: --bogus"),
    (["fly"], "invalid choice: 'fly'"),
    (["train"], "required: PATH"),
    ([], "no command given"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, expected, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_out_that_is_a_file_is_an_error(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("")
    assert cli.main(["demo", "--out", str(target), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and err.count("\n") == 1


def test_missing_sample_says_where_it_looked_and_how_to_rebuild(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli_demo, "SAMPLE_DIR", tmp_path / "nowhere")
    assert cli.main(["demo", "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere") in err and "build_fashion_mnist_sample.py" in err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_python_dash_m_learnkit_reports_errors_without_traceback():
    result = subprocess.run([sys.executable, "-m", "learnkit", "demo", "--epochs", "-3"], capture_output=True,
                            text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip() == ("learnkit demo: error: argument --epochs: expected a positive integer, "
                                     "got -3 (see 'learnkit demo --help')")
