"""Every command's --help renders (rich reads `[...]` in help texts as markup)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "command",
    [[], ["import"], ["products", "list"], ["catalog", "versions"], ["catalog", "rollback"]],
)
def test_help_renders(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "productimport.cli", *command, "--help"],
        capture_output=True, text=True, check=False, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout
    if command == ["import"]:
        assert "s3://BUCKET[/prefix]" in done.stdout
