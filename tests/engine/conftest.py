"""Helpers for engine tests: run imports in-process or as the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from productimport.engine.catalog import Catalog
from productimport.engine.objectstore import LocalObjectStore
from productimport.engine.options import ImportOptions
from productimport.engine.products import list_products
from productimport.engine.runner import run_import
from productimport.models.product import ImportResult
from tests.engine.catalog_rows import rows
from tests.shared_data import SHARED_DATA


class Engine:
    """A local store in a temp dir, and shortcuts to import into it and read it back."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = LocalObjectStore(root / "store")

    def write(self, name: str, content: str | bytes, encoding: str = "utf-8") -> Path:
        path = self.root / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
        return path

    def run(self, source: Path | str, catalog: str = "main", **options: Any) -> ImportResult:
        result, _code = self.run_with_code(source, catalog, **options)
        return result

    def run_with_code(
        self, source: Path | str, catalog: str = "main", **options: Any
    ) -> tuple[ImportResult, int]:
        opts = ImportOptions(
            source=str(source), catalog=catalog, store=str(self.store.root), **options
        )
        return run_import(opts, store=self.store)

    def catalog(self, name: str = "main", namespace: str = "default") -> Catalog:
        return Catalog(self.store, namespace, name)

    def products(self, name: str = "main") -> dict[str, dict[str, Any]]:
        items, _total = list_products(self.catalog(name), limit=10_000_000)
        return {p["sku"]: p for p in items}

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "productimport.cli", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            check=False,
        )

    def cli_json(self, *args: str, env: dict[str, str] | None = None) -> tuple[dict, int]:
        done = self.cli(*args, "--json", env=env)
        assert done.stdout.strip(), done.stderr
        return json.loads(done.stdout), done.returncode


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return Engine(tmp_path)


@pytest.fixture
def seeded(engine: Engine) -> Engine:
    """A catalog of three products, A, B and C (version 1)."""
    engine.run(
        engine.write("base.csv", rows(("A", "Alpha", "1"), ("B", "Beta", "2"), ("C", "Gamma", "3")))
    )
    return engine


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"the shared sample data is missing at {SHARED_DATA}"
    return SHARED_DATA
