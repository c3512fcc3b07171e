"""Execute the tutorial notebooks with the installed compvi and store their outputs.

Run from the repository root (one notebook at a time; each trains a model):

    python scripts/execute_tutorials.py                         # every notebook
    python scripts/execute_tutorials.py tutorials/quickstart.ipynb

Each executed notebook records the compvi version that produced it in its metadata
(``metadata["compvi"]["version"]``; ``tests/test_tutorials.py`` fails when it differs from
the installed version), and loses its stderr streams (progress bars, logging tips and
warnings that name local paths).
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]


def execute(path: Path) -> None:
    """Execute ``path`` in place, from the tutorials folder, and record the version."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=3600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [
                output
                for output in cell.get("outputs", [])
                if not (output.output_type == "stream" and output.get("name") == "stderr")
            ]
    notebook.metadata["compvi"] = {"version": version("compvi")}
    nbformat.write(notebook, path)


def main(argv: list[str] | None = None) -> int:
    """Execute the notebooks named in ``argv`` (default: every tutorial)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((REPO / "tutorials").glob("*.ipynb"))
    for path in notebooks:
        print(f"executing {path}", flush=True)
        execute(path.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
