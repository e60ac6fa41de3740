"""The catalog layout before Delta Lake, read once to migrate it.

Before, a catalog was `CURRENT` (a pointer to the current manifest), `versions/*.json`
(manifests chained by `parent`) and `snapshots/*.parquet` (one whole snapshot per
version). `migrate` replays that history into the catalog's Delta table, one commit per
former version with the same number, import id, counts and rollback mark, so status
fields, idempotency and rollback targets keep their meaning. It is resumable: the table
is created knowing how many versions it must take over (LEGACY_VERSIONS_KEY), and a
run that stops part way is continued by the next reader or writer. The former objects
are left where they are (nothing is lost); `productimport catalog migrate` reports them.
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel

from productimport.engine.catalog import (
    BUCKET_COLUMN,
    Catalog,
    DataFile,
    bucket_count_for,
    bucket_of,
)
from productimport.engine.errors import PreconditionFailed
from productimport.models.product import SNAPSHOT_COLUMNS, ImportCounts


class Manifest(BaseModel):
    version: int
    key: str
    parent: str | None = None
    snapshot: str | None = None
    products: int = 0
    importId: str | None = None
    counts: ImportCounts | None = None
    rollbackOf: int | None = None
    createdAt: datetime


def legacy_history(catalog: Catalog) -> list[Manifest]:
    """The former layout's versions, oldest first; empty when there is none."""
    found = catalog.store.get_with_etag(catalog.key("CURRENT"))
    if found is None:
        return []
    key: str | None = json.loads(found[0])["manifest"]
    chain = []
    while key:
        manifest = Manifest.model_validate_json(catalog.store.get(catalog.key(key)))
        chain.append(manifest)
        key = manifest.parent
    return chain[::-1]


def migrate(catalog: Catalog) -> bool:
    """Bring a catalog of the former layout into its Delta table; False if it has none."""
    history = legacy_history(catalog)
    if not history:
        return False
    for _attempt in range(len(history) + 5):
        try:
            _replay(catalog, history)
            return True
        except PreconditionFailed:
            continue  # another process migrates too: go on from where it got
    raise PreconditionFailed(f"catalog {catalog.prefix} kept changing during its migration")


def _replay(catalog: Catalog, history: list[Manifest]) -> None:
    from productimport.engine import sandbox
    from productimport.engine.merge import DIGEST_KEY, DIGEST_SPEC, load_current
    from productimport.engine.parse import sql_string

    table = catalog.open_table()
    if table is None:
        biggest = max(m.products for m in history)
        catalog.create_table(bucket_count_for(biggest), legacy_versions=history[-1].version)
    with tempfile.TemporaryDirectory(prefix="productimport-migrate-") as tmp:
        workdir = Path(tmp)
        con = sandbox.connect(directories=[workdir], lock=False)
        try:
            while True:
                table = catalog.open_table()
                assert table is not None
                current = catalog.head_of(table)
                if current.version >= history[-1].version:
                    return
                manifest = history[current.version]  # versions are 1, 2, ... in order
                snapshot = None
                if manifest.snapshot is not None:
                    snapshot = workdir / f"v{manifest.version}.parquet"
                    catalog.store.download(catalog.key(manifest.snapshot), snapshot)
                view = load_current(con, snapshot)
                buckets = current.buckets or 1
                out = workdir / f"v{manifest.version}"
                added: list[DataFile] = []
                if snapshot is not None:
                    columns = ", ".join(SNAPSHOT_COLUMNS)
                    con.execute(
                        f"COPY (SELECT {columns}, {bucket_of('sku', buckets)} AS {BUCKET_COLUMN} "
                        f"FROM {view}) TO '{out}' (FORMAT parquet, COMPRESSION zstd, "
                        f"PARTITION_BY ({BUCKET_COLUMN}), "
                        # the view's digests are this engine's: say so, as merge does
                        f"KV_METADATA {{{DIGEST_KEY}: {sql_string(DIGEST_SPEC)}}})"
                    )
                    for part in sorted(out.glob(f"{BUCKET_COLUMN}=*/*.parquet")):
                        bucket = int(part.parent.name.split("=", 1)[1])
                        (rows,) = con.execute(  # type: ignore[misc]
                            f"SELECT count(*) FROM read_parquet('{part}')"
                        ).fetchone()
                        added.append(
                            catalog.upload(part, bucket, rows, manifest.importId or "migrated")
                        )
                    snapshot.unlink()
                record = {
                    "importId": manifest.importId,
                    "counts": manifest.counts.model_dump() if manifest.counts else None,
                    "products": manifest.products,
                    "rollbackOf": manifest.rollbackOf,
                    "createdAt": manifest.createdAt.isoformat(),
                    "migratedFrom": manifest.key,
                    "buckets": buckets,
                }
                catalog.commit(current, buckets, list(range(buckets)), added, record)
        finally:
            con.close()
