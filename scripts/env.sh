# Sourced by demo.sh and test.sh: create or refresh the project's virtual environment.
# COMPVI_TORCH_SPEC overrides the torch requirement installed first (default: the CPU build
# torch==2.13.0; e.g. COMPVI_TORCH_SPEC="torch==2.6.0" for a CUDA build from PyPI, or
# COMPVI_TORCH_SPEC="" to keep whatever torch the environment already has).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
VENV="${COMPVI_VENV:-.venv}"
TORCH_SPEC="${COMPVI_TORCH_SPEC-torch==2.13.0}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; }
# torch first: installing the package alone would let pip pick a multi-GB CUDA build.
if [ -n "$TORCH_SPEC" ]; then
    pip_install "$TORCH_SPEC"
fi
if [ -n "${COMPVI_EXTRAS:-}" ]; then
    pip_install -e ".[$COMPVI_EXTRAS]"
else
    pip_install -e .
fi
