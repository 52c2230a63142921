"""The cli package on real files, fast: a tiny exported text model (untrained AWD-LSTM, a few rows), then
`learnkit predict` on the inputs and bundles a careless user gives it. Every failure is one line on stderr, exit
status 2, never a traceback, and it names the file that is at fault."""
from __future__ import annotations

import json
import os
import struct
import time
import zlib
from pathlib import Path

import pytest

from learnkit.export.recipe import meaning_sha256
from learnkit import cli
from learnkit.cli import record as cli_record
from learnkit.cli import train as cli_train
from learnkit.cli.args import CliError
from learnkit.cli.vision import image_kind
from learnkit.core.device import versions
from learnkit.core.serialization import sha256_file
from learnkit.testing import tiny_learner

TINY_AWD_LSTM = {"emb_size": 8, "hidden_size": 8, "n_layers": 1}


def _png(path: Path) -> Path:
    """A real 2x2 RGB PNG (what a user might pass by mistake)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def text_model(tmp_path_factory) -> Path:
    from learnkit.text import TextDataBunch, text_classifier_learner
    root = tmp_path_factory.mktemp("cli")
    rows = ["text,label"] + [f"the cat sat on mat number {i},cats" for i in range(8)] + \
           [f"the dog ran in park number {i},dogs" for i in range(8)]
    (root / "tiny.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    data = TextDataBunch.from_csv(root / "tiny.csv", valid_pct=0.25, seed=0, batch_size=4)
    learn = text_classifier_learner(data, "awd_lstm", config=TINY_AWD_LSTM, path=root, progress=False)
    return learn.export(root / "model")


def _copy(bundle: Path, dest: Path) -> Path:
    dest.mkdir()
    for f in bundle.iterdir():
        if f.is_file():
            (dest / f.name).write_bytes(f.read_bytes())
    return dest


def _one_line_error(capsys, code: int, *expected: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


def test_predict_on_a_text_model_classifies_text_files(text_model, tmp_path, capsys):
    note = tmp_path / "note.txt"
    note.write_text("the cat sat", encoding="utf-8")
    assert cli.main(["predict", str(text_model), str(note), "--text", "the dog ran"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(note), "text-1"]
    assert all(line.split("\t")[1] in ("cats", "dogs") for line in lines)


def test_predict_on_a_text_model_refuses_an_image_file(text_model, tmp_path, capsys):
    # before: the PNG's bytes were decoded as text and classified, exit 0
    png = _png(tmp_path / "photo.txt")  # the extension does not matter: the first bytes do
    err = _one_line_error(capsys, cli.main(["predict", str(text_model), str(png)]), str(png), "PNG image",
                          "text model")
    assert capsys.readouterr().out == ""
    assert "Traceback" not in err


def test_predict_refuses_a_fifo_without_reading_it(text_model, tmp_path, capsys):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    start = time.perf_counter()
    _one_line_error(capsys, cli.main(["predict", str(text_model), str(fifo)]), str(fifo), "not a regular file")
    assert time.perf_counter() - start < 60  # (would block forever on open(); a generous guard, not a timing test)


def test_a_damaged_weights_file_is_named_not_the_folder(text_model, tmp_path, capsys):
    bundle = _copy(text_model, tmp_path / "bundle")
    weights = bundle / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated, and the recipe's hash updated to match
    recipe = json.loads((bundle / "recipe.json").read_text())
    recipe["weights"]["sha256"] = sha256_file(weights)
    recipe["meaning_sha256"] = meaning_sha256(recipe)  # hashes made to match: only reading the weights can tell
    (bundle / "recipe.json").write_text(json.dumps(recipe))
    _one_line_error(capsys, cli.main(["predict", str(bundle), "--text", "hi"]), "weights.safetensors")


def test_weights_whose_header_is_not_a_table_are_blamed_not_the_recipe(text_model, tmp_path, capsys):
    # before: the AttributeError from reading the weights was reported as "recipe.json is damaged"
    bundle = _copy(text_model, tmp_path / "bundle")
    weights = bundle / "weights.safetensors"
    header = b"[1, 2]  "
    weights.write_bytes(struct.pack("<Q", len(header)) + header)
    recipe = json.loads((bundle / "recipe.json").read_text())
    recipe["weights"]["sha256"] = sha256_file(weights)
    recipe["meaning_sha256"] = meaning_sha256(recipe)  # hashes made to match: only reading the weights can tell
    (bundle / "recipe.json").write_text(json.dumps(recipe))
    err = _one_line_error(capsys, cli.main(["predict", str(bundle), "--text", "hi"]), str(weights))
    assert "recipe.json is damaged" not in err


def test_a_weights_path_that_is_a_folder_is_one_line(text_model, tmp_path, capsys):
    bundle = _copy(text_model, tmp_path / "bundle")
    (bundle / "weights.safetensors").unlink()
    (bundle / "weights.safetensors").mkdir()
    _one_line_error(capsys, cli.main(["predict", str(bundle), "--text", "hi"]), "weights.safetensors")


def test_a_recipe_missing_a_key_names_the_recipe(text_model, tmp_path, capsys):
    bundle = _copy(text_model, tmp_path / "bundle")
    recipe = json.loads((bundle / "recipe.json").read_text())
    del recipe["model"]
    (bundle / "recipe.json").write_text(json.dumps(recipe))
    _one_line_error(capsys, cli.main(["predict", str(bundle), "--text", "hi"]), "recipe.json")


def test_any_load_failure_is_one_line_never_a_traceback(text_model, monkeypatch, capsys):
    import learnkit.export

    def broken(path):
        raise RuntimeError("PytorchStreamReader failed reading zip archive:\nfailed finding central directory")
    monkeypatch.setattr(learnkit.export, "load_learner", broken)
    _one_line_error(capsys, cli.main(["predict", str(text_model), "--text", "hi"]), str(text_model),
                    "failed finding central directory")


def test_help_says_images_where_images_work(capsys):
    for command in ("train", "predict"):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "image" in text, (command, text)
    assert "text only" not in text and "(a text file)" not in text


def test_one_error_class_and_no_other_copy():
    import learnkit.cli.main as main_module
    import learnkit.cli.vision as vision_module
    names = {n for m in (main_module, cli_train, vision_module) for n, v in vars(m).items()
             if isinstance(v, type) and issubclass(v, Exception) and v.__module__.startswith("learnkit.cli")}
    assert names <= {"CliError"}, names
    assert CliError("x").status == 2 and CliError("x", status=1).status == 1


def test_run_record_has_the_shared_fields_and_leaves_no_temp_file(tmp_path):
    learn = tiny_learner(path=tmp_path)
    learn.fit(1)
    started = time.perf_counter()
    record = cli_record.write_run_record(tmp_path, "train", learn, {"lr": 1e-3}, {"fit": 0.5}, started, ["loss.png"])
    on_disk = json.loads((tmp_path / "run.json").read_text())
    assert on_disk == json.loads(json.dumps(record, default=str))
    assert on_disk["versions"] == versions() and on_disk["command"] == "train" and on_disk["lr"] == 1e-3
    assert on_disk["metrics"] == {k: v for k, v in learn.history.epoch_records[-1].items()
                                  if k not in ("epoch", "time")}
    assert on_disk["files"] == ["loss.png", "run.json"] and on_disk["seconds"]["fit"] == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_fingerprint_of_a_file_is_its_sha256_and_of_a_folder_changes_with_a_file(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    assert cli_record.fingerprint(tmp_path / "a.txt") == sha256_file(tmp_path / "a.txt")
    before = cli_record.fingerprint(tmp_path)
    (tmp_path / "b.txt").write_text("x")
    assert cli_record.fingerprint(tmp_path) != before


def test_image_kind_by_magic_bytes(tmp_path):
    assert image_kind(_png(tmp_path / "a.bin")) == "PNG"
    (tmp_path / "j").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 20)
    (tmp_path / "t").write_text("BMW is a car brand, not a bitmap.")
    assert image_kind(tmp_path / "j") == "JPEG" and image_kind(tmp_path / "t") is None
