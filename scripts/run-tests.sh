#!/usr/bin/env bash
# Runs the whole suite. pytest exits 5 when it collects nothing; that alone is not a
# failure of the project (every other non-zero exit is passed through unchanged).
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "run-tests: pytest collected no tests (exit 5); treating as success"
  exit 0
fi
exit $rc
