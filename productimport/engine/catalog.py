"""A catalog: immutable, versioned Parquet snapshots plus one pointer object.

Layout under `{namespace}/{catalog}/` (docs/loader-contract.md):

    CURRENT                       {"version": N, "manifest": "versions/..."}
    versions/{N:08d}-{uuid}.json  manifest: parent, snapshot, import id, counts
    snapshots/{N:08d}-{uuid}.parquet

A commit uploads the snapshot and the manifest under fresh, never-reused keys, then
moves CURRENT with a conditional write. CURRENT is the only mutable object, so a writer
killed at any point leaves the catalog exactly as it was (at worst some unreferenced
objects), and of two concurrent writers exactly one wins the pointer; the other re-reads
and recomputes. Version history is the chain of manifests from CURRENT via `parent`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from productimport.engine.errors import InvalidOptions, PreconditionFailed
from productimport.engine.objectstore import ObjectStore
from productimport.models.product import ImportCounts

FAILPOINT_ENV = "PRODUCTIMPORT_FAILPOINT"


def failpoint(name: str) -> None:
    """Crash here, hard, when PRODUCTIMPORT_FAILPOINT names this point.

    Lets tests prove that a process killed at the worst moment of a commit leaves the
    catalog intact; SIGKILL runs no cleanup, exactly like the OOM killer.
    """
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


def check_name(kind: str, value: str) -> str:
    if not NAME_PATTERN.match(value):
        raise InvalidOptions(
            f"{kind} {value!r} is not a valid name: use lowercase letters, digits, '.', '-' "
            "or '_', starting and ending with a letter or digit, at most 63 characters"
        )
    return value


class Manifest(BaseModel):
    version: int
    key: str = Field(description="this manifest's own key, relative to the catalog")
    parent: str | None = None
    snapshot: str | None = Field(None, description="snapshot key; None for an empty catalog")
    products: int = 0
    importId: str | None = None
    counts: ImportCounts | None = None
    rollbackOf: int | None = None
    createdAt: datetime


class Catalog:
    def __init__(self, store: ObjectStore, namespace: str, name: str) -> None:
        self.store = store
        self.namespace = check_name("namespace", namespace)
        self.name = check_name("catalog", name)
        self.prefix = f"{namespace}/{name}"

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}"

    def ref(self, relative: str) -> str:
        return self.store.ref(self.key(relative))

    def import_key(self, import_id: str, document: str) -> str:
        """Where an import's own documents are (docs/loader-contract.md): result.json,
        progress.json, errors.csv, errors.json."""
        return self.key(f"imports/{import_id}/{document}")

    # -- reading ---------------------------------------------------------------------
    def head(self) -> tuple[Manifest | None, str | None]:
        """The current manifest (None for the empty catalog) and CURRENT's ETag."""
        found = self.store.get_with_etag(self.key("CURRENT"))
        if found is None:
            return None, None
        pointer = json.loads(found[0])
        return self.manifest(pointer["manifest"]), found[1]

    def manifest(self, key: str) -> Manifest:
        return Manifest.model_validate_json(self.store.get(self.key(key)))

    def history(self) -> Iterator[Manifest]:
        """Committed versions, newest first."""
        current, _ = self.head()
        while current is not None:
            yield current
            current = self.manifest(current.parent) if current.parent else None

    def version(self, number: int) -> Manifest:
        for manifest in self.history():
            if manifest.version == number:
                return manifest
        raise InvalidOptions(f"catalog {self.prefix} has no version {number}")

    def find_import(self, import_id: str, depth: int = 200) -> Manifest | None:
        """The version an import id produced, if it was committed (idempotency)."""
        for index, manifest in enumerate(self.history()):
            if manifest.importId == import_id and manifest.rollbackOf is None:
                return manifest
            if index >= depth:
                break
        return None

    def download_snapshot(self, manifest: Manifest | None, target: Path) -> bool:
        """Copy a version's snapshot to a local file; False for the empty catalog."""
        if manifest is None or manifest.snapshot is None:
            return False
        self.store.download(self.key(manifest.snapshot), target)
        return True

    # -- writing ---------------------------------------------------------------------
    def commit(
        self,
        parent: Manifest | None,
        parent_etag: str | None,
        snapshot: Path | None,
        *,
        products: int,
        import_id: str | None,
        counts: ImportCounts | None,
        reuse_snapshot: str | None = None,
        rollback_of: int | None = None,
    ) -> Manifest:
        """Publish a new version; PreconditionFailed if CURRENT moved since `parent`."""
        version = (parent.version if parent else 0) + 1
        unique = f"{version:08d}-{uuid.uuid4().hex[:12]}"
        snapshot_key = reuse_snapshot
        if snapshot is not None:
            snapshot_key = f"snapshots/{unique}.parquet"
            self.store.upload(self.key(snapshot_key), snapshot, "application/vnd.apache.parquet")
            failpoint("after-snapshot-upload")
        manifest = Manifest(
            version=version,
            key=f"versions/{unique}.json",
            parent=parent.key if parent else None,
            snapshot=snapshot_key,
            products=products,
            importId=import_id,
            counts=counts,
            rollbackOf=rollback_of,
            createdAt=datetime.now(UTC),
        )
        self.store.put(
            self.key(manifest.key), manifest.model_dump_json().encode(), "application/json"
        )
        pointer = json.dumps({"version": version, "manifest": manifest.key}).encode()
        failpoint("before-pointer-move")
        # The linearisation point: only one writer can move CURRENT from parent_etag.
        self.store.put_if(self.key("CURRENT"), pointer, parent_etag)
        failpoint("after-pointer-move")
        return manifest

    def rollback(self, to_version: int) -> Manifest:
        """Make an earlier version current again, as a new version (history is kept)."""
        for _attempt in range(5):
            current, etag = self.head()
            if current is None:
                raise InvalidOptions(f"catalog {self.prefix} is empty; nothing to roll back")
            target = self.version(to_version)
            try:
                return self.commit(
                    current,
                    etag,
                    None,
                    products=target.products,
                    import_id=None,
                    counts=None,
                    reuse_snapshot=target.snapshot,
                    rollback_of=target.version,
                )
            except PreconditionFailed:
                continue
        raise PreconditionFailed(f"catalog {self.prefix} kept changing during rollback")
