#!/usr/bin/env bash
# Set up the environment, then lint, run the whole test suite (slow tests included) and
# build the documentation with warnings as errors.
COMPVI_EXTRAS="test,doc" source "$(dirname "$0")/env.sh"
"$VENV/bin/ruff" check src tests benchmarks
"$VENV/bin/ruff" format --check src tests benchmarks
"$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
"$VENV/bin/python" -m sphinx -W --keep-going -q -b html docs docs/_build/html
