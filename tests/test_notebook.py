"""The long-tail notebook runs top to bottom on a small synthetic catalog, and every plot cell draws.

The committed notebook holds outputs of a run on the Scientific data; this test reads it, executes a copy in
memory (the file is never written) with its parameters set through the environment variables its parameter
cell reads, and checks that no cell errored and that each cell tagged ``plot`` produced a PNG.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "long_tail_coverage.ipynb"
CELL_TIMEOUT = 240  # seconds, per cell
PLOT_TAG = "plot"


def _kernel_python() -> str:
    """The interpreter the ``python3`` kernel will run: jupyter_client swaps a bare ``python`` for ours."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv = KernelSpecManager().get_kernel_spec("python3").argv
    except NoSuchKernel:
        pytest.skip("no python3 Jupyter kernel; install ipykernel in this environment")
    return sys.executable if argv[0] in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}") \
        else argv[0]


def test_notebook_runs_on_synthetic_data_and_draws_every_plot(tmp_path, monkeypatch):
    assert Path(_kernel_python()).resolve() == Path(sys.executable).resolve(), \
        "the python3 kernel would run another interpreter; install ipykernel in this virtualenv"
    monkeypatch.setenv("KGREC_NB_DATA", "synthetic")
    monkeypatch.setenv("KGREC_NB_SYNTHETIC", "800,600,8000")
    monkeypatch.setenv("KGREC_NB_MAX_USERS", "200")
    monkeypatch.setenv("KGREC_NB_SEED", "0")
    monkeypatch.setenv("KGREC_NB_OUT", str(tmp_path / "out"))
    before = NOTEBOOK.read_bytes()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError, naming the cell, when one fails

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "some code cell did not run"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    plots = [c for c in code if PLOT_TAG in c.metadata.get("tags", [])]
    assert len(plots) >= 8
    for c in plots:
        assert any("image/png" in o.get("data", {}) for o in c.outputs), f"plot cell drew no image:\n{c.source}"
    assert NOTEBOOK.read_bytes() == before  # the committed notebook is left as it is


def test_committed_notebook_shows_every_plot():
    """The committed copy carries its outputs (GitHub renders them): a PNG in every plot cell, no error."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    plots = [c for c in code if PLOT_TAG in c.metadata.get("tags", [])]
    assert plots and all(any("image/png" in o.get("data", {}) for o in c.outputs) for c in plots)
    assert NOTEBOOK.stat().st_size < 2_000_000
