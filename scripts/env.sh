# Sourced by demo.sh and test.sh: create or refresh the project's virtual environment.
# COMPVI_TORCH_SPEC overrides the pip arguments that install torch first (default:
# torch==2.13.0, a CPU build on the project's machines; e.g. "torch==2.6.0" for PyPI's CUDA
# build, "torch --index-url URL" for another wheel index, or "" to keep the installed torch).
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
    # Unquoted on purpose: the spec may carry pip options such as --index-url.
    # shellcheck disable=SC2086
    pip_install $TORCH_SPEC
fi
if [ -n "${COMPVI_EXTRAS:-}" ]; then
    pip_install -e ".[$COMPVI_EXTRAS]"
else
    pip_install -e .
fi
