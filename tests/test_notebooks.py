"""Every notebook in notebooks/ runs top to bottom (with its SMALL settings) without an error.

The notebooks run, two at a time, in kernels of this very interpreter: a kernel spec written to
a temporary folder on JUPYTER_PATH, under a name of its own, so that no "python3" kernel
installed elsewhere (another interpreter, another environment) is picked up. Outputs are never
committed: the test fails on a notebook saved with outputs.
"""

import json
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "jaxpomdp-tests"
#: Seconds one notebook may take (they take about a minute or less each with SMALL = True).
TIMEOUT = 600
#: Execution order on the two workers (measured: NVI's and the policy-gradient notebook's
#: compilations take longest).
LONGEST_FIRST = ["03_policy_gradient.ipynb", "02_neural_value_iteration.ipynb", "01_quickstart.ipynb",
                 "04_composing.ipynb"]


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory):
    """A kernel spec that starts ``ipykernel`` with ``sys.executable``."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({sys.executable})", "language": "python"}))
    return str(root)


def test_there_are_four_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb", "02_neural_value_iteration.ipynb",
                                           "03_policy_gradient.ipynb", "04_composing.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_saved_without_outputs_and_starts_with_the_setup_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        assert not cell.get("outputs") and cell.get("execution_count") is None, \
            f"{path.name}: outputs are committed (clear them: jupyter nbconvert --clear-output --inplace)"
    first = code[0].source
    assert '"google.colab" in sys.modules' in first and "%pip install" in first and "print(jax.devices())" in first
    assert any(c.source.lstrip().startswith("SMALL = True") for c in code), f"{path.name}: no SMALL = True cell"


def _execute(path: Path, workdir: Path):
    """Runs one notebook; returns ``(notebook, seconds, error or None)``."""
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=TIMEOUT, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    try:
        client.execute()  # raises CellExecutionError, naming the cell, on any error
    except Exception as e:  # noqa: BLE001 -- reported by the notebook's own test
        return nb, time.perf_counter() - start, e
    return nb, time.perf_counter() - start, None


@pytest.fixture(scope="module")
def executed(kernel_path, tmp_path_factory):
    """Every notebook executed, two at a time: each kernel compiles on about one core, so the
    notebooks run side by side on a two-core machine in not much more time than the longest."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", kernel_path)
    mp.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    try:
        workers = max(1, min(2, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            # the longest first, so that the two workers finish at about the same time
            order = sorted(NOTEBOOKS, key=lambda p: LONGEST_FIRST.index(p.name) if p.name in LONGEST_FIRST else -1)
            futures = {p.name: pool.submit(_execute, p, tmp_path_factory.mktemp(p.stem)) for p in order}
            return {name: f.result() for name, f in futures.items()}
    finally:
        mp.undo()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_without_error(path, executed):
    nb, seconds, error = executed[path.name]
    if error is not None:
        raise error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    # the setup cell printed the devices, the notebook drew figures
    assert "Device" in "".join(o.get("text", "") for o in nb.cells[0].outputs)
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 1
    print(f"{path.name}: {seconds:.1f} s")
