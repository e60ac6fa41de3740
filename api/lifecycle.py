"""A catalog's versions over REST: list them with the imports that made them, roll back
to one, export one (docs/api.md, "Catalog versions").

The catalog calls are the engine's (engine/catalog.py) and block, so they run in worker
threads; a version's files come through the API's snapshot cache (api/catalogread.py),
so an export is bounded by it as the product reads are.
"""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import anyio
from pydantic import BaseModel, Field

from productimport.api.auth import Principal
from productimport.api.catalogread import CatalogReader, remote_snapshot
from productimport.api.errors import ApiError
from productimport.api.services import Services
from productimport.api.views import RUNNING, view
from productimport.engine.catalog import Catalog, CatalogVersion, Head
from productimport.engine.errors import InvalidOptions, PreconditionFailed, TemporaryFailure
from productimport.engine.parse import sql_string
from productimport.models.product import (
    HIDDEN_COLUMNS,
    PRODUCT_FIELDS,
    SNAPSHOT_COLUMNS,
    ImportCounts,
)

ExportFormat = Literal["csv", "parquet"]
EXPORT_DIR_PREFIX = "productimport-api-export-"
EXPORT_CHUNK = 1024 * 1024

# The native preset's own headers (engine/presets.py, NATIVE), in the model's order:
# an export read back with preset=native fills the same fields from the same columns.
CSV_FIELDS = [f for f in PRODUCT_FIELDS if f != "attributes"]
# A product as Parquet: the stored columns but the engine's own digest (and the bucket,
# which is the table's layout, not the product's).
PARQUET_COLUMNS = [c for c in SNAPSHOT_COLUMNS if c not in HIDDEN_COLUMNS]
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}


class VersionView(BaseModel):
    version: int
    importUid: str | None = Field(
        None, description="the ProductImport (metadata.uid) that made it; null for a rollback"
    )
    importName: str | None = Field(
        None, description="that ProductImport's name; null when the resource is gone"
    )
    counts: ImportCounts | None = None
    products: int = 0
    rollbackOf: int | None = Field(None, description="the version a rollback restored")
    createdAt: datetime


@contextlib.contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """The engine's failures as the API's: an unknown version 404, a catalog that kept
    moving 409, a store that is down 503."""
    try:
        yield
    except InvalidOptions as exc:
        raise ApiError(404, f"{what}: {exc.message}", code="not_found") from exc
    except PreconditionFailed as exc:
        raise ApiError(409, f"{what}: {exc}; retry", code="conflict") from exc
    except TemporaryFailure as exc:
        raise ApiError(
            503, f"{what}: {exc}", code="store_unavailable", headers={"Retry-After": "5"}
        ) from exc


async def _import_names(svc: Services, namespace: str) -> dict[str, str]:
    """uid -> name of the namespace's ProductImports (every one, labelled or not: a
    `kubectl apply`d resource need not carry the catalog label)."""
    return {
        o["metadata"]["uid"]: o["metadata"]["name"]
        for o in await svc.imports.list(namespace)
        if o.get("metadata", {}).get("uid")
    }


def _view(record: CatalogVersion, names: dict[str, str]) -> VersionView:
    return VersionView(
        version=record.version,
        importUid=record.importId,
        importName=names.get(record.importId) if record.importId else None,
        counts=record.counts,
        products=record.products,
        rollbackOf=record.rollbackOf,
        createdAt=record.createdAt,
    )


async def list_versions(
    svc: Services, reader: CatalogReader, namespace: str, catalog: str
) -> list[VersionView]:
    """Newest first; empty for a catalog never written."""
    cat = reader.catalog(namespace, catalog)
    with engine_errors(f"reading the versions of catalog {catalog!r}"):
        history = await anyio.to_thread.run_sync(cat.history)
    if not history:
        return []
    names = await _import_names(svc, namespace)
    return [_view(record, names) for record in history]


async def rollback(
    svc: Services,
    reader: CatalogReader,
    principal: Principal,
    namespace: str,
    catalog: str,
    version: int,
) -> VersionView:
    """A new version with version `version`'s content, recorded as an Event."""
    objs = await svc.imports.list(namespace)
    running = [
        imp.name
        for imp in map(view, objs)
        # A dry run never commits, so it cannot race a rollback.
        if imp.catalog == catalog and imp.phase == RUNNING and not imp.dry_run
    ]
    if running:
        raise ApiError(
            409,
            f"import {running[0]!r} of catalog {catalog!r} is running; roll back when it "
            "has finished (or cancel it first)",
            code="import_running",
        )
    cat = reader.catalog(namespace, catalog)
    with engine_errors(f"rolling catalog {catalog!r} back to version {version}"):
        made = await anyio.to_thread.run_sync(_rollback, cat, version)
    await svc.imports.events.emit(
        namespace,
        "Normal",
        "CatalogRolledBack",
        f"catalog {catalog} rolled back to version {version}: version {made.version} has "
        f"its content (replacing version {made.version - 1}); by {principal.name}",
    )
    names = {o["metadata"].get("uid"): o["metadata"].get("name") for o in objs}
    return _view(made, {k: v for k, v in names.items() if k and v})


def _rollback(cat: Catalog, version: int) -> CatalogVersion:
    head = cat.head()
    if head.table is not None and version == head.version:
        # Delta restores only to an earlier version; this one is current already.
        raise ApiError(
            409,
            f"version {version} is the current version of catalog {cat.name!r}",
            code="already_current",
        )
    return cat.rollback(version)


@dataclass
class Export:
    version: int
    format: ExportFormat
    directory: Path  # the temporary directory holding `file` (and `header`)
    file: Path
    header: bytes = b""  # sent before `file` (the CSV's header line)

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The export's bytes; the temporary files are removed at the end, also when the
        client goes away midway."""
        try:
            if self.header:
                yield self.header
            async with await anyio.open_file(self.file, "rb") as handle:
                while chunk := await handle.read(EXPORT_CHUNK):
                    yield chunk
        finally:
            await anyio.to_thread.run_sync(self.remove)


async def _version_head(cat: Catalog, version: int | None) -> Head | None:
    """The version to export: the current one, or `version` (404 when the catalog has
    no such version). None: a catalog never written, asked for its current version."""
    head = await anyio.to_thread.run_sync(cat.head)
    if head.table is None:
        if version is None:
            return None
        raise ApiError(404, f"catalog {cat.name!r} has no version {version}", code="not_found")
    if version is None or version == head.version:
        return head
    if version > head.version:
        raise ApiError(404, f"catalog {cat.name!r} has no version {version}", code="not_found")
    return await anyio.to_thread.run_sync(cat.at_version, version)


async def export(
    svc: Services,
    reader: CatalogReader,
    namespace: str,
    catalog: str,
    fmt: ExportFormat,
    version: int | None,
) -> Export:
    """A version's products in a temporary file (the caller streams and removes it)."""
    cat = reader.catalog(namespace, catalog)
    with engine_errors(f"exporting catalog {catalog!r}"):
        head = await _version_head(cat, version)
    base = Path(svc.settings.snapshot_cache_dir or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=EXPORT_DIR_PREFIX, dir=base))
    try:
        if head is None or not head.files:
            number = 0 if head is None else head.version
            header = await anyio.to_thread.run_sync(_write, None, directory, fmt)
        else:
            number = head.version
            remote = remote_snapshot(svc.minio, cat, head)
            pinned = reader.cache.pinned(
                namespace, catalog, remote.name, lambda: remote.size, remote.download
            )
            async with pinned as snapshot:
                header = await anyio.to_thread.run_sync(_write, snapshot, directory, fmt)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return Export(number, fmt, directory, directory / f"products.{fmt}", header)


def _empty_source() -> str:
    columns = ", ".join(f"NULL::{kind} AS {name}" for name, kind in SNAPSHOT_COLUMNS.items())
    return f"(SELECT {columns} WHERE false)"


def _write(snapshot: Path | None, directory: Path, fmt: ExportFormat) -> bytes:
    """COPY the products (by SKU) to `directory/products.{fmt}`; the CSV's header line,
    written here rather than by DuckDB, is returned to be sent first."""
    from productimport.engine import sandbox  # lazily, as catalogread does

    target = sql_string(str(directory / f"products.{fmt}"))
    allowed = [directory] if snapshot is None else [snapshot, directory]
    with sandbox.connect(directories=allowed) as con:
        if snapshot is None:
            source = _empty_source()
        else:
            pattern = sql_string(str(snapshot / "*.parquet"))
            source = f"read_parquet({pattern}, hive_partitioning = false)"
        if fmt == "parquet":
            columns = ", ".join(PARQUET_COLUMNS)
            con.execute(
                f"COPY (SELECT {columns} FROM {source} ORDER BY sku) TO {target} "
                "(FORMAT parquet, COMPRESSION zstd)"
            )
            return b""
        keys = [
            row[0]
            for row in con.execute(
                f"SELECT DISTINCT e.key FROM (SELECT unnest(attributes) AS e FROM {source}) "
                "WHERE e.key IS NOT NULL ORDER BY 1"
            ).fetchall()
        ]
        con.execute(
            f"COPY ({_csv_select(source, keys)}) TO {target} "
            "(FORMAT csv, HEADER false, DELIMITER ',', QUOTE '\"', ESCAPE '\"')"
        )
    return _csv_header([*CSV_FIELDS, *keys])


def _csv_select(source: str, keys: list[str]) -> str:
    """The native preset's columns, then one column per attribute key.

    Each field as the native preset reads it back: the price as its decimal text, the
    tags joined by commas (the preset splits on them; a stored tag never holds one), an
    attribute's value under its own key (a column no field takes is an attribute; every
    field's own header is present, so no attribute is taken for a field's alias).
    """
    fields = []
    for name in CSV_FIELDS:
        if name == "price":
            fields.append("CAST(price AS VARCHAR) AS price")
        elif name == "tags":
            fields.append("array_to_string(tags, ',') AS tags")
        else:
            fields.append(name)
    attributes = [
        f"map_extract_value(attrs, {sql_string(key)}) AS a{i}" for i, key in enumerate(keys)
    ]
    inner = f"SELECT *, map_from_entries(coalesce(attributes, [])) AS attrs FROM {source}"
    return f"SELECT {', '.join([*fields, *attributes])} FROM ({inner}) ORDER BY sku"


def _csv_header(names: list[str]) -> bytes:
    """Every header quoted: the importer guesses the delimiter from the header line,
    counting candidates outside quotes, so only the commas between headers count."""
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(names)
    return out.getvalue().encode()
