#!/usr/bin/env bash
# Set up the environment, then lint, run the whole test suite (slow tests included), build
# the documentation with warnings as errors, and (when pytest gets no arguments, as in CI)
# check the wheel: built, twine-checked, installed in a fresh venv and run (check_wheel.sh).
# COMPVI_CHECK_WHEEL=0 skips that last step, COMPVI_CHECK_WHEEL=1 forces it.
COMPVI_EXTRAS="test,doc" source "$(dirname "$0")/env.sh"
"$VENV/bin/ruff" check src tests benchmarks
"$VENV/bin/ruff" format --check src tests benchmarks
"$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
"$VENV/bin/python" -m sphinx -W --keep-going -q -b html docs docs/_build/html
if [ "${COMPVI_CHECK_WHEEL:-$(($# == 0))}" = 1 ]; then
    bash scripts/check_wheel.sh
fi
