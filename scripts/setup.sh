#!/usr/bin/env bash
# Installs the Debian packages the dev cluster needs, then creates (or refreshes) the
# project's virtualenv in .venv: the product exactly as the
# image installs it (requirements.lock, then the project; see Dockerfile), then the
# development tools (requirements-dev.lock, compiled against the same pins).
# Idempotent: a second run with an unchanged lock does nothing. pip's wheel cache lives
# outside the clone (~/.cache/pip, or $PIP_CACHE_DIR), so a fresh clone installs fast.
set -euo pipefail
cd "$(dirname "$0")/.."
# The node's and the image build's Debian packages (containerd, runc, CNI, buildah,
# mmdebstrap): a dpkg query when they are there, apt-get when one is missing.
devenv/debian-packages.sh
PYTHON=${PYTHON:-python3}
VENV=.venv
stamp="$VENV/.productimport-lock.sha256"
want=$(cat requirements.lock requirements-dev.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -r requirements.lock
"$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps -e .
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -r requirements-dev.lock
echo "$want" > "$stamp"
echo "setup: .venv ready ($("$VENV/bin/python" --version))"
