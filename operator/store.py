"""What the loader left in the store for an import: its result and its progress.

The operator reads, never writes, these objects (docs/loader-contract.md). A store that
cannot be reached raises the engine's TemporaryFailure; the caller retries.
"""

from __future__ import annotations

import json
import logging
from functools import cached_property

from minio.error import S3Error

from productimport.engine.catalog import STEP_DOCUMENT_PREFIX, Catalog
from productimport.engine.objectstore import ObjectStore, open_store
from productimport.models.product import ImportResult

log = logging.getLogger(__name__)


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

    def source_size(self, bucket: str, key: str) -> int | None:
        """The size of an object source; None where it cannot be told (the object is
        missing, which the loader reports, or the store is a local directory)."""
        client = getattr(self.store, "client", None)  # MinIO's
        if client is None:
            return None
        try:
            return int(client.stat_object(bucket, key).size)
        except S3Error as exc:
            if exc.code != "NoSuchKey":  # a missing source is the loader's to report
                log.warning(
                    "cannot read the size of s3://%s/%s (%s); it is imported in one Pod",
                    bucket, key, exc.code,
                )  # fmt: skip
            return None
        except Exception as exc:  # MinIO unreachable: the one-Pod import decides
            log.warning("cannot read the size of s3://%s/%s (%s)", bucket, key, exc)
            return None

    def discard_steps(self, namespace: str, catalog: str, import_id: str) -> int:
        """Delete what a partitioned import's steps handed on (engine/partitioned.py):
        the split file and the plan, needed by nothing once the import has ended."""
        cat = Catalog(self.store, namespace, catalog)
        folder = cat.import_key(import_id, "")
        keys = [k for k in self.store.list(folder) if k.startswith(folder + STEP_DOCUMENT_PREFIX)]
        for key in keys:
            self.store.delete(key)
        return len(keys)

    def progress(self, namespace: str, catalog: str, import_id: str) -> dict | None:
        raw = self._read(namespace, catalog, import_id, "progress.json")
        if not raw:
            return None
        doc = json.loads(raw)
        return {k: doc[k] for k in ("stage", "rowsRead", "updatedAt") if doc.get(k) is not None}
