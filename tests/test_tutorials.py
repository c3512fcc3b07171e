"""Every tutorial notebook runs end to end (real-data ones skip when the data is absent)."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).parents[1]
TUTORIALS = sorted((REPO / "tutorials").glob("*.ipynb"))
DATA_DIR = REPO.parent / "shared" / "data"
# Real data each notebook reads from ../shared/data (see the README there).
NEEDS_DATA = {
    "genetic_screen_papalexi.ipynb": "papalexi2021_thp1_crispr.h5ad",
    "stimulation_kang.ipynb": "kang2018_pbmc_ifnb.h5ad",
}


@pytest.mark.slow
@pytest.mark.parametrize("notebook", TUTORIALS, ids=lambda path: path.name)
def test_tutorial_runs_end_to_end(notebook, tmp_path, monkeypatch):
    data_file = NEEDS_DATA.get(notebook.name)
    if data_file is not None and not (DATA_DIR / data_file).is_file():
        pytest.skip(f"{notebook.name} needs {DATA_DIR / data_file}, which is absent.")
    monkeypatch.setenv("COMPVI_DATA_DIR", str(DATA_DIR))
    # Few epochs: this checks that every cell runs, not what a full fit shows.
    monkeypatch.setenv("COMPVI_TUTORIAL_EPOCHS", "5")
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [
        output
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.output_type == "error"
    ]
    assert not errors
    assert any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")


def test_every_real_data_notebook_is_known():
    assert set(NEEDS_DATA) <= {path.name for path in TUTORIALS}


@pytest.mark.parametrize("notebook", TUTORIALS, ids=lambda path: path.name)
def test_committed_outputs_come_from_this_version(notebook):
    recorded = nbformat.read(notebook, as_version=4).metadata.get("compvi", {}).get("version")
    assert recorded == version("compvi"), (
        f"{notebook.name} was executed with compvi {recorded}, not {version('compvi')}: run "
        f"python scripts/execute_tutorials.py {notebook.relative_to(REPO)}"
    )
