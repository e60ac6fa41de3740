"""Fixtures of the chart, image and examples tests (see chart_support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devenv.controlplane import DevEnvError, obtain_binaries


@pytest.fixture(scope="session")
def helm() -> Path:
    try:
        return obtain_binaries() / "helm"
    except DevEnvError as exc:
        pytest.fail(f"helm is not available: {exc}", pytrace=False)
