"""What the loader left in the store for an import: its result and its progress.

The operator reads, never writes, these objects (docs/loader-contract.md). A store that
cannot be reached raises the engine's TemporaryFailure; the caller retries.
"""

from __future__ import annotations

import json
from functools import cached_property

from productimport.engine.catalog import Catalog
from productimport.engine.objectstore import ObjectStore, open_store
from productimport.models.product import ImportResult


class ImportReports:
    """`location`: where the loaders write (`s3://bucket[/prefix]` or a local directory,
    as the loader's --store), or an ObjectStore already opened."""

    def __init__(self, location: str | ObjectStore) -> None:
        self.location = location

    @cached_property
    def store(self) -> ObjectStore:
        if isinstance(self.location, str):
            return open_store(self.location)
        return self.location

    def _read(self, namespace: str, catalog: str, import_id: str, name: str) -> bytes | None:
        cat = Catalog(self.store, namespace, catalog)
        found = self.store.get_with_etag(cat.import_key(import_id, name))
        return found[0] if found else None

    def result(self, namespace: str, catalog: str, import_id: str) -> ImportResult | None:
        raw = self._read(namespace, catalog, import_id, "result.json")
        return ImportResult.model_validate_json(raw) if raw else None

    def progress(self, namespace: str, catalog: str, import_id: str) -> dict | None:
        raw = self._read(namespace, catalog, import_id, "progress.json")
        if not raw:
            return None
        doc = json.loads(raw)
        return {k: doc[k] for k in ("stage", "rowsRead", "updatedAt") if doc.get(k) is not None}
