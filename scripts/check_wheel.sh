#!/usr/bin/env bash
# Build compvi's sdist and wheel, check them with twine, install the wheel into a fresh
# virtual environment (PyTorch first, as env.sh does) and run `compvi --version` and a short
# `compvi demo` from it, outside the checkout, so that nothing is imported from src/.
# Run by test.sh after the tests; needs the project's .venv with the `test` extra (build,
# twine). COMPVI_VENV, PYTHON and COMPVI_TORCH_SPEC as in env.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
VENV="${COMPVI_VENV:-.venv}"
TORCH_SPEC="${COMPVI_TORCH_SPEC-torch==2.13.0}"
work="$(mktemp -d "${TMPDIR:-/tmp}/compvi-wheel.XXXXXX")"
trap 'rm -rf "$work"' EXIT

"$VENV/bin/python" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 ||
    { cat "$work/build.log"; exit 1; }
"$VENV/bin/python" -m twine check --strict "$work"/dist/*
"$PYTHON" -m venv "$work/venv"
pip_install() { "$work/venv/bin/python" -m pip install -qq --disable-pip-version-check "$@"; }
if [ -n "$TORCH_SPEC" ]; then
    # shellcheck disable=SC2086
    pip_install $TORCH_SPEC
fi
pip_install "$work"/dist/compvi-*.whl
cd "$work"
"$work/venv/bin/compvi" --version
"$work/venv/bin/python" - "$work/venv" <<'EOF'
import sys
from importlib.resources import files

import compvi

assert compvi.__file__.startswith(sys.argv[1]), f"compvi imported from {compvi.__file__}"
assert files("compvi").joinpath("py.typed").is_file(), "py.typed is missing from the wheel"
EOF
"$work/venv/bin/compvi" demo --out "$work/demo" --n-cells 400 --n-genes 50 --max-epochs 2 \
    --quiet
test -s "$work/demo/screen.h5ad" && test -s "$work/demo/embeddings.png" &&
    test -s "$work/demo/model/model.pt"
echo "wheel check: $(basename "$work"/dist/compvi-*.whl) and its sdist pass twine check;" \
    "installed in a fresh venv, compvi --version and compvi demo ran"
