#!/usr/bin/env bash
# Runs the whole suite. The control-plane binaries are built (first run only; cached under
# ~/.cache/productimport) before pytest starts, so that build never counts against a
# test's timeout. pytest exits 5 when it collects nothing; that alone is not a failure of
# the project (every other non-zero exit is passed through unchanged).
set -uo pipefail
cd "$(dirname "$0")/.."
if ! devenv/obtain.sh >/dev/null; then
  echo "run-tests: building the local control plane failed (see above)" >&2
  exit 1
fi
.venv/bin/python -m pytest "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "run-tests: pytest collected no tests (exit 5); treating as success"
  exit 0
fi
exit $rc
