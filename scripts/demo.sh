#!/usr/bin/env bash
# Set up the environment, then simulate a screen, fit ComparativeVI and report recovery.
# Extra arguments go to `compvi demo` (see `compvi demo --help`).
COMPVI_EXTRAS="" source "$(dirname "$0")/env.sh"
exec "$VENV/bin/compvi" demo "$@"
