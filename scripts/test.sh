#!/usr/bin/env bash
# Sets up (with test tools) and runs the test suite. Extra arguments go to pytest (e.g. -m "not real").
# pytest's exit code 5 (no test collected) is a failure here, never a silent pass.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev || exit 1
.venv/bin/python -m pytest -q --durations=25 "$@"  # the slowest tests listed: the budget is ~20 minutes
code=$?
if [[ $code -eq 5 ]]; then
  echo "[clpet test] ERROR: pytest collected no tests" >&2
  exit 1
fi
exit $code
