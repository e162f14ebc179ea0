#!/usr/bin/env bash
# Runs the test suite: the tests marked `backend_free` once (under JAX, the quickest
# backend to import), then every other test once per Keras backend (a backend is fixed
# at import). Each pass runs on two pytest-xdist workers; tests marked `serial` (they
# start processes or time themselves) run on one worker, one at a time. Each pass
# prints its wall time.
# Usage: bash tests/run.sh [pytest args...]   e.g. bash tests/run.sh tests/layers -k masking
# KERAS_MAE_TEST_WORKERS=0 runs each pass in one process; KERAS_MAE_JUNIT_DIR=DIR writes
# DIR/<pass>.xml, which `python tests/durations.py DIR/*.xml` sums up.
set -u
cd "$(dirname "$0")/.."
status=0
times=()
run_pass() {  # run_pass NAME BACKEND MARKER-EXPRESSION [pytest args...]
    local name=$1 backend=$2 marks=$3 start=$SECONDS code=0
    shift 3
    echo "=== $name pass (KERAS_BACKEND=$backend) ==="
    KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider -m "$marks" \
        -n "${KERAS_MAE_TEST_WORKERS:-2}" --dist loadgroup \
        ${KERAS_MAE_JUNIT_DIR:+--junitxml="$KERAS_MAE_JUNIT_DIR/$name.xml"} "$@" tests || code=$?
    # 5: no test of this pass was selected (e.g. by -k): nothing failed.
    if [ $code -ne 0 ] && [ $code -ne 5 ]; then
        status=1
    fi
    times+=("$(printf '%-12s %5d s' "$name" $((SECONDS - start)))")
    echo "=== $name pass: $((SECONDS - start)) s ==="
}
run_pass backend-free jax "backend_free" "$@"
for backend in tensorflow jax torch; do
    run_pass "$backend" "$backend" "not backend_free" "$@"
done
echo "=== wall time by pass ==="
printf '  %s\n' "${times[@]}"
exit $status
