#!/usr/bin/env bash
# Runs the whole test suite once per Keras backend (a backend is fixed at import).
# Usage: bash tests/run.sh [pytest args...]
set -u
cd "$(dirname "$0")/.."
status=0
for backend in tensorflow jax torch; do
    echo "=== KERAS_BACKEND=$backend ==="
    KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider "$@" tests || status=1
done
exit $status
