"""`pip install learnkit` from a built wheel, not the checkout: the wheel carries the samples, and `learnkit demo`
then `learnkit predict` work from a folder outside the checkout, with the installed learnkit.

The wheel is built without build isolation (no network), installed with --no-deps into a fresh virtual environment
that sees this interpreter's packages (torch, ...) through a .pth file; that file adds paths only, so the dev
environment's editable learnkit (its own .pth/finder) is not seen there."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _run(args: list, cwd: Path, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, \
        f"{args} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_wheel_ships_the_samples_and_runs_demo_and_predict_outside_the_checkout(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"), PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INDEX="1", LEARNKIT_HOME=str(tmp_path / "home"))
    # Built from a copy of the checkout: setuptools builds in-tree, and a build/ left in the checkout could carry
    # stale modules into later wheels.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "runs", "*.egg-info", "__pycache__", ".pytest_cache", "png-limit512"))
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, source],
         cwd=tmp_path, env=env)
    (wheel,) = wheels.glob("learnkit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    samples = "learnkit/datasets/samples/"
    assert sum(n.startswith(samples + "fashion-mnist-sample/png/") and n.endswith(".png") for n in names) == 2500
    assert samples + "fortunes-sample/fortunes.csv" in names
    assert samples + "fashion-mnist-sample/train-images-idx3-ubyte.gz" in names

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path,
                     env).stdout.strip())
    dev_paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "learnkit-test-dev-packages.pth").write_text("\n".join(sorted(dev_paths)) + "\n")
    _run([python, "-m", "pip", "install", "--no-deps", "-q", wheel], cwd=tmp_path, env=env)

    work = tmp_path / "somewhere"
    work.mkdir()
    where = _run([python, "-c", "import learnkit; print(learnkit.__file__)"], cwd=work, env=env).stdout.strip()
    assert Path(where).is_relative_to(site) and not Path(where).is_relative_to(REPO), where

    learnkit = env_dir / "bin" / "learnkit"
    demo = _run([learnkit, "demo", "--out", "out", "--epochs", "1", "--no-progress"], cwd=work, env=env)
    record = json.loads((work / "out" / "run.json").read_text())
    assert Path(record["sample"]["folder"]).is_relative_to(site)  # the sample inside the installed package
    assert record["metrics"]["accuracy"] > 0.5
    assert str(work / "out" / "model") in demo.stdout
    bag = sorted((site / "learnkit/datasets/samples/fashion-mnist-sample/png/valid/Bag").glob("*.png"))[0]
    lines = _run([learnkit, "predict", "out/model", bag], cwd=work, env=env).stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].split("\t")[0] == str(bag)
    assert lines[0].split("\t")[1] in record["sample"]["classes"]
