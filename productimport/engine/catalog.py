"""A catalog: a Delta Lake table of products, hash-partitioned by key.

Layout under `{namespace}/{catalog}/` (docs/loader-contract.md):

    imports/{import id}/          result.json, progress.json, errors.csv, errors.json

and the catalog's Delta table (ObjectStore.table_store: `{namespace}/{catalog}/products/`
in a directory store, a bucket of its own on MinIO, see s3store.table_bucket):

    _delta_log/                   one JSON commit per version
    bucket=B/part-*.parquet       the products whose key hashes to bucket B

Version 0 is the empty table; each import that changes something commits one version
that replaces the files of the buckets it changed, all of them in one commit, so a reader
never sees half an import. A commit is a conditional PUT of the next log entry: of two
writers from the same version exactly one wins, the other re-reads and diffs again. Each
commit carries this project's own record of it (import id, counts, rollback target) as
commit metadata, which is what `history()` shows. Rollback is Delta's restore (a new
version with an earlier version's files); retention is Delta's vacuum.

Rows are placed by `bucket_of(sku)`: md5's upper 64 bits modulo the bucket count. md5 is
fixed forever, unlike DuckDB's hash(), so a key never moves between buckets when DuckDB
changes. The count is a power of two, recorded in every commit (and, as first chosen, in
the table's configuration `productimport.buckets`); an import into a catalog that has
outgrown it doubles it, which splits each bucket in two (md5 % 2n is md5 % n or that
plus n), so the new layout is computed bucket by bucket too.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from productimport.engine.errors import (
    ImportFailure,
    InvalidOptions,
    PreconditionFailed,
    TemporaryFailure,
)
from productimport.engine.objectstore import ObjectStore
from productimport.models.product import SNAPSHOT_COLUMNS, ImportCounts

if TYPE_CHECKING:
    from deltalake import DeltaTable

FAILPOINT_ENV = "PRODUCTIMPORT_FAILPOINT"

BUCKET_COLUMN = "bucket"
BUCKETS_KEY = "productimport.buckets"
# How many versions of the catalog's former layout (CURRENT + manifests) the table was
# created to take over; while the table is behind that, the migration is unfinished.
LEGACY_VERSIONS_KEY = "productimport.legacyVersions"
METADATA_KEY = "productimport"
# A bucket is what one step of a merge holds at a time. A million products merge in one
# step within an 800 MB memory limit (docs/performance.md); beyond that the join spills
# and slows down faster than it grows, so larger catalogs are split. Powers of two, so
# that doubling the count splits each bucket in two.
ROWS_PER_BUCKET = 1_000_000
ROWS_PER_BUCKET_ENV = "PRODUCTIMPORT_ROWS_PER_BUCKET"
MAX_BUCKETS = 256
# How far back a bucket count is looked for before the whole history is read (each
# commit of this project records one; maintenance commits do not).
RECENT_COMMITS = 20
# An import's documents that the steps of a partitioned import hand on to each other
# (engine/partitioned.py); the operator deletes them when the import ends.
STEP_DOCUMENT_PREFIX = "stage-"


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


def bucket_count_for(products: int) -> int:
    """Buckets for a catalog of this many products: a power of two.
    PRODUCTIMPORT_ROWS_PER_BUCKET overrides ROWS_PER_BUCKET (smaller buckets for a
    smaller memory limit)."""
    per_bucket = int(os.environ.get(ROWS_PER_BUCKET_ENV) or ROWS_PER_BUCKET)
    wanted = max(1, math.ceil(products / max(1, per_bucket)))
    return min(MAX_BUCKETS, 1 << (wanted - 1).bit_length())


def bucket_of(sku_sql: str, buckets: int) -> str:
    """SQL for the bucket of a key."""
    return f"(md5_number_upper({sku_sql}) % {int(buckets)})::INTEGER"


# DuckDB's snapshot column types, as Delta names them.
_DELTA_TYPES = {
    "VARCHAR": "string",
    "DECIMAL(18,4)": "decimal(18,4)",
    "TIMESTAMP": "timestamp_ntz",
    "BIGINT": "long",
    "INTEGER": "integer",
}


def delta_schema() -> Any:
    """The table's schema: the snapshot columns, then the bucket."""
    from deltalake import Field, Schema
    from deltalake.schema import ArrayType, PrimitiveType, StructType

    def kind(duck: str) -> Any:
        if duck.startswith("STRUCT(key VARCHAR, value VARCHAR)[]"):
            entry = StructType(
                [Field("key", PrimitiveType("string")), Field("value", PrimitiveType("string"))]
            )
            return ArrayType(entry)
        if duck.endswith("[]"):
            return ArrayType(kind(duck[:-2]))
        return PrimitiveType(_DELTA_TYPES[duck])

    columns = [Field(name, kind(duck)) for name, duck in SNAPSHOT_COLUMNS.items()]
    return Schema([*columns, Field(BUCKET_COLUMN, PrimitiveType("integer"))])


class CatalogVersion(BaseModel):
    """One version of a catalog, as history shows it."""

    version: int
    products: int = 0
    importId: str | None = None
    counts: ImportCounts | None = None
    rollbackOf: int | None = None
    createdAt: datetime
    buckets: int | None = None  # the bucket count of this version's layout


# The columns whose bounds each file's Delta statistics carry: the key (point lookups) and
# the time of the last change (feeds of what changed since a time).
STATS_COLUMNS = ("sku", "updated_at")


def file_stats(local: Path) -> dict[str, Any]:
    """minValues, maxValues and nullCount of STATS_COLUMNS, from the Parquet footer
    DuckDB wrote (no data read). Parquet keeps these bounds untruncated for strings as
    short as a SKU; a timestamp as Delta writes it (ISO 8601, UTC, microseconds)."""
    import duckdb

    con = duckdb.connect()
    try:
        found = con.execute(
            "SELECT path_in_schema, min(stats_min_value), max(stats_max_value), "
            "sum(stats_null_count) FROM parquet_metadata(?) "
            "WHERE path_in_schema IN (SELECT unnest(?)) GROUP BY 1",
            [str(local), list(STATS_COLUMNS)],
        ).fetchall()
    finally:
        con.close()
    low: dict[str, Any] = {}
    high: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for column, smallest, largest, null_count in found:
        if smallest is None or largest is None:
            continue
        if column == "updated_at":
            smallest, largest = (_iso(v) for v in (smallest, largest))
        low[column], high[column], nulls[column] = smallest, largest, int(null_count or 0)
    return {"minValues": low, "maxValues": high, "nullCount": nulls} if low else {}


def _iso(timestamp: str) -> str:
    """DuckDB's '2026-11-29 18:14:39.548446' as Delta's '2026-11-29T18:14:39.548446Z'."""
    return timestamp.replace(" ", "T") + "Z"


@dataclass(frozen=True)
class DataFile:
    """One Parquet file of the table; `path` is relative to the table's root."""

    path: str
    bucket: int
    size: int
    rows: int
    # Delta's per-file statistics beyond numRecords (minValues, maxValues, nullCount), so
    # readers skip files on a SKU or an updated_at filter; empty for files listed back
    # from a table (only new files need them).
    stats: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass
class Head:
    """The version an import reads and commits on top of."""

    version: int  # 0: nothing committed yet
    buckets: int | None  # None: no table yet (the first commit creates it)
    files: list[DataFile] = field(default_factory=list)
    table: DeltaTable | None = None

    @property
    def products(self) -> int:
        return sum(f.rows for f in self.files)

    def files_of(self, bucket: int) -> list[DataFile]:
        return [f for f in self.files if f.bucket == bucket]


def _record(entry: dict[str, Any]) -> CatalogVersion | None:
    """This project's record of a commit, from its Delta history entry."""
    raw = entry.get(METADATA_KEY)
    if raw is None:
        return None
    data = json.loads(raw) if isinstance(raw, str) else dict(raw)
    if data.get("created"):  # version 0: the table was created, nothing imported
        return None
    data.pop("migratedFrom", None)
    created = data.pop("createdAt", None)
    when = (
        datetime.fromisoformat(created)
        if created
        else datetime.fromtimestamp(entry["timestamp"] / 1000, UTC)
    )
    return CatalogVersion.model_validate({**data, "version": entry["version"], "createdAt": when})


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

    @cached_property
    def table(self) -> ObjectStore:
        """The store holding the catalog's Delta table (its own bucket on MinIO)."""
        return self.store.table_store(self.namespace, self.name)

    @property
    def table_ref(self) -> str:
        """The Delta table's location, for any Delta reader."""
        return self.table.table_location()[0]

    # -- reading ---------------------------------------------------------------------
    def open_table(self, version: int | None = None) -> DeltaTable | None:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        uri, options = self.table.table_location()
        with _delta_errors(f"opening {self.table_ref}"):
            try:
                return DeltaTable(uri, version=version, storage_options=options)
            except TableNotFoundError:
                return None
            except OSError as exc:
                if "NoSuchBucket" in str(exc):  # nothing committed yet (a bucket per table)
                    return None
                raise

    def current_table(self) -> DeltaTable | None:
        """The table at its latest version; a catalog in the former layout is migrated
        first (engine/legacy.py). None: nothing committed yet."""
        table = self.open_table()
        legacy = 0 if table is None else int(_config(table).get(LEGACY_VERSIONS_KEY, 0))
        if table is None or table.version() < legacy:
            from productimport.engine.legacy import migrate

            if migrate(self):
                table = self.open_table()
        return table

    def head(self) -> Head:
        """The current version, with its files."""
        table = self.current_table()
        if table is None:
            return Head(version=0, buckets=None)
        return self.head_of(table)

    def head_of(self, table: DeltaTable) -> Head:
        with _delta_errors(f"reading {self.table_ref}"):
            actions = table.get_add_actions(flatten=True)
            columns = {name: actions.column(name).to_pylist() for name in actions.column_names}
        rows = columns.get("num_records") or [0] * len(columns["path"])
        files = [
            DataFile(path, int(bucket), int(size), int(count or 0))
            for path, bucket, size, count in zip(
                columns["path"],
                columns[f"partition.{BUCKET_COLUMN}"],
                columns["size_bytes"],
                rows,
                strict=True,
            )
        ]
        return Head(version=table.version(), buckets=self._buckets(table), files=files, table=table)

    def _buckets(self, table: DeltaTable) -> int:
        """The bucket count of the table's current version: the newest commit record
        that names one, else the count the table was created with."""
        found = self.newest_record_with(table, "buckets")
        return int(found[1]["buckets"]) if found else int(_config(table)[BUCKETS_KEY])

    def newest_record_with(
        self, table: DeltaTable, key: str, depth: int | None = None
    ) -> tuple[int, dict[str, Any]] | None:
        """The newest commit record of this project's that has `key`, and its version,
        looking back at most `depth` commits (None: all). Commits without one (vacuum's,
        or an import that does not set that key) are passed over. Nearly always the
        latest commit is an import's: one read; further back only when needed."""
        limits = [1, RECENT_COMMITS, depth]
        for limit in [n for n in limits if depth is None or (n is not None and n <= depth)]:
            with _delta_errors(f"reading the history of {self.table_ref}"):
                entries = table.history(limit)
            for entry in entries:
                raw = entry.get(METADATA_KEY)
                record = json.loads(raw) if isinstance(raw, str) else (raw or {})
                if record.get(key) is not None:
                    return entry["version"], record
            if limit is not None and len(entries) < limit:
                break  # that was the whole history
        return None

    def at_version(self, version: int) -> Head:
        """An earlier version, for reading."""
        table = self.open_table(version)
        if table is None:
            raise InvalidOptions(f"catalog {self.prefix} has no version {version}")
        return self.head_of(table)

    def history(self, limit: int | None = None) -> list[CatalogVersion]:
        """Committed versions, newest first (imports, rollbacks and migrated versions)."""
        table = self.current_table()  # one load of the log, not a head's files as well
        if table is None:
            return []
        with _delta_errors(f"reading the history of {self.table_ref}"):
            entries = table.history(limit)
        return [record for entry in entries if (record := _record(entry)) is not None]

    def version(self, number: int) -> CatalogVersion:
        for record in self.history():
            if record.version == number:
                return record
        raise InvalidOptions(f"catalog {self.prefix} has no version {number}")

    def find_import(self, import_id: str, depth: int = 200) -> CatalogVersion | None:
        """The version an import id produced, if it was committed (idempotency)."""
        for record in self.history(depth):
            if record.importId == import_id and record.rollbackOf is None:
                return record
        return None

    def download(self, data_file: DataFile, target: Path) -> None:
        self.table.download(data_file.path, target)

    # -- writing ---------------------------------------------------------------------
    def upload(self, local: Path, bucket: int, rows: int, import_id: str) -> DataFile:
        """Put a bucket's new file in the table's folder; invisible until committed."""
        name = f"{BUCKET_COLUMN}={bucket}/part-{uuid.uuid4().hex[:16]}-{import_id[:40]}.parquet"
        data_file = DataFile(name, bucket, local.stat().st_size, rows, file_stats(local))
        self.table.upload(data_file.path, local, "application/vnd.apache.parquet")
        return data_file

    def create_table(self, buckets: int, legacy_versions: int = 0) -> DeltaTable:
        """Version 0: the empty table. PreconditionFailed when another writer made it."""
        from deltalake import CommitProperties, DeltaTable
        from deltalake.exceptions import CommitFailedError

        self.table.ensure_bucket()
        uri, options = self.table.table_location()
        configuration = {BUCKETS_KEY: str(buckets)}
        if legacy_versions:
            configuration[LEGACY_VERSIONS_KEY] = str(legacy_versions)
        try:
            with _delta_errors(f"creating {self.table_ref}"):
                return DeltaTable.create(
                    uri,
                    delta_schema(),
                    partition_by=[BUCKET_COLUMN],
                    name=self.prefix,
                    configuration=configuration,
                    storage_options=options,
                    commit_properties=CommitProperties(
                        custom_metadata={METADATA_KEY: json.dumps({"created": True})},
                        # Never rebased: a table another writer created first is theirs.
                        max_commit_retries=0,
                    ),
                    raise_if_key_not_exists=False,  # our own configuration keys
                )
        except (ImportFailure, CommitFailedError):
            if self.open_table() is not None:
                raise PreconditionFailed(f"{self.table_ref} was created meanwhile") from None
            raise

    def commit(
        self,
        head: Head,
        buckets: int,
        replaced: list[int],
        added: list[DataFile],
        record: dict[str, Any],
    ) -> int:
        """Publish a version: the files of buckets `replaced` give way to `added`, in
        one commit on top of `head`. PreconditionFailed if the table moved since."""
        from deltalake import CommitProperties
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import AddAction, RemoveAction

        failpoint("after-snapshot-upload")
        table = head.table if head.table is not None else self.create_table(buckets)
        now = int(time.time() * 1000)
        gone = set(replaced)
        actions: list[Any] = [
            RemoveAction(f.path, True, now, f.size, {BUCKET_COLUMN: str(f.bucket)})
            for f in head.files
            if f.bucket in gone
        ]
        actions += [
            AddAction(
                f.path,
                f.size,
                {BUCKET_COLUMN: str(f.bucket)},
                now,
                True,
                json.dumps({"numRecords": f.rows, **f.stats}),
            )
            for f in added
        ]
        failpoint("before-pointer-move")
        try:
            with _delta_errors(f"committing to {self.table_ref}"):
                table.create_write_transaction(
                    actions,
                    mode="append",
                    schema=table.schema(),
                    partition_by=[BUCKET_COLUMN],
                    commit_properties=CommitProperties(
                        custom_metadata={METADATA_KEY: json.dumps(record, default=str)},
                        # An import's diff holds against its base version only: a
                        # conflict means diffing again, never rebasing blindly.
                        max_commit_retries=0,
                    ),
                )
        except CommitFailedError as exc:
            raise PreconditionFailed(f"{self.table_ref} moved: {exc}") from exc
        failpoint("after-pointer-move")
        return head.version + 1

    def rollback(self, to_version: int) -> CatalogVersion:
        """Make an earlier version current again, as a new version (history is kept)."""
        from deltalake import CommitProperties
        from deltalake.exceptions import CommitFailedError

        for _attempt in range(5):
            head = self.head()
            if head.table is None or head.version == 0:
                raise InvalidOptions(f"catalog {self.prefix} is empty; nothing to roll back")
            target = self.version(to_version)
            record = {
                "products": target.products,
                "rollbackOf": target.version,
                "buckets": target.buckets or head.buckets,
            }
            try:
                with _delta_errors(f"restoring {self.table_ref}"):
                    head.table.restore(
                        to_version,
                        commit_properties=CommitProperties(
                            custom_metadata={METADATA_KEY: json.dumps(record)},
                            max_commit_retries=0,
                        ),
                    )
            except CommitFailedError:
                continue
            return self.version(head.version + 1)
        raise PreconditionFailed(f"catalog {self.prefix} kept changing during rollback")

    def vacuum(self, retention_hours: int, dry_run: bool = False) -> list[str]:
        """Delete the files no version younger than `retention_hours` needs: versions
        older than that can no longer be read or rolled back to."""
        table = self.current_table()
        if table is None:
            return []
        with _delta_errors(f"vacuuming {self.table_ref}"):
            return table.vacuum(
                retention_hours=retention_hours,
                dry_run=dry_run,
                enforce_retention_duration=False,
            )

    def retain(
        self, keep_versions: int, orphan_hours: int | None = None, dry_run: bool = False
    ) -> Retained:
        """Keep the last `keep_versions` versions (imports and rollbacks, as history lists
        them) readable and restorable, and nothing older: delete the data files only older
        versions need (delta-rs vacuum, told to keep the files of every kept version; it
        never deletes a file of the current version either, so the files a rollback
        brought back stay) and trim the log to the oldest kept version, so history lists
        exactly the versions that can be read or rolled back to. A rollback version holds
        its target's files, so the target's data stays while the rollback is kept.

        `orphan_hours`: files no version references (a commit that lost its race, a loader
        killed before its commit) are deleted once older than that (a full vacuum, which
        lists the table); None leaves them. Keep it above the longest import: an
        import's files are unreferenced until its commit."""
        if keep_versions < 1:
            raise InvalidOptions("keep_versions must be at least 1: the current version")
        table = self.current_table()
        if table is None:
            return Retained(kept=[], deleted=[])
        with _delta_errors(f"reading the history of {self.table_ref}"):
            entries = table.history()
        records = [record for entry in entries if (record := _record(entry)) is not None]
        kept = [record.version for record in records[:keep_versions]]
        older = len(records) > keep_versions
        deleted: list[str] = []
        with _delta_errors(f"applying retention to {self.table_ref}"):
            if older and not dry_run:
                self._own_the_log(table)
            if older:
                deleted += table.vacuum(
                    retention_hours=0,
                    dry_run=dry_run,
                    enforce_retention_duration=False,
                    keep_versions=kept,
                )
            if orphan_hours is not None:
                deleted += table.vacuum(
                    retention_hours=orphan_hours,
                    dry_run=dry_run,
                    enforce_retention_duration=False,
                    keep_versions=kept,
                    full=True,
                )
            if older and not dry_run:
                self._trim_log(min(kept))
        # delta-rs names some files by their full location, most relative to the table.
        root = self.table_ref.rstrip("/") + "/"
        return Retained(kept=kept, deleted=sorted({path.removeprefix(root) for path in deleted}))

    def _own_the_log(self, table: DeltaTable) -> None:
        """Make retain() the only thing that trims the table's log (once per table: a
        commit of table properties, not a version of ours). delta-rs's own cleanup, after
        every automatic checkpoint, goes by age (30 days) and could take log entries of
        versions retain() keeps; and retain() trims by count, so no age at all."""
        if LOG_PROPERTIES.items() <= _config(table).items():
            return
        table.alter.set_table_properties(LOG_PROPERTIES, raise_if_not_exists=False)

    def _trim_log(self, oldest: int) -> None:
        """Delete the log before version `oldest` (delta-rs cleanup_metadata), with a
        checkpoint at `oldest` first, from which that version and every later one read.
        cleanup_metadata deletes up to the newest checkpoint at or below the version the
        table was opened at: opened at its latest version when no checkpoint lies after
        `oldest` (an automatic one every 100 commits), else at `oldest` itself."""
        from deltalake import DeltaTable

        uri, options = self.table.table_location()
        checkpoints = {
            int(match.group(1))
            for key in self.table.list("_delta_log/")
            if (match := _CHECKPOINT.search(key))
        }
        if oldest not in checkpoints:
            DeltaTable(uri, version=oldest, storage_options=options).create_checkpoint()
        latest = DeltaTable(uri, storage_options=options)
        if any(oldest < c <= latest.version() for c in checkpoints):
            latest = DeltaTable(uri, version=oldest, storage_options=options)
        latest.cleanup_metadata()


@dataclass(frozen=True)
class Retained:
    """What Catalog.retain kept and deleted."""

    kept: list[int]  # the versions that stay readable, newest first
    # Data files deleted (on a dry run: to be deleted), relative to the table. May name
    # files an earlier pass deleted: Delta keeps a removed file's tombstone for a week
    # (delta.deletedFileRetentionDuration), and vacuum deletes it again, a no-op.
    deleted: list[str]


# Table properties that leave the log to Catalog.retain (see _own_the_log).
LOG_PROPERTIES = {
    "delta.logRetentionDuration": "interval 0 seconds",
    "delta.enableExpiredLogCleanup": "false",
}
_CHECKPOINT = re.compile(r"_delta_log/(\d{20})\.checkpoint\.")


def _config(table: DeltaTable) -> dict[str, str]:
    return dict(table.metadata().configuration)


@contextlib.contextmanager
def _delta_errors(what: str) -> Iterator[None]:
    """delta-rs failures as the engine's: transport trouble is worth a retry (exit 75),
    anything else fails the import with delta-rs's message."""
    from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

    try:
        yield
    except (CommitFailedError, TableNotFoundError):
        raise
    except PermissionError as exc:  # 403: these credentials may not; a retry cannot help
        raise ImportFailure(f"{what}: access denied: {exc}", reason="CatalogAccessDenied") from exc
    except (OSError, DeltaError) as exc:
        text = str(exc)
        if isinstance(exc, OSError) or _TRANSPORT.search(text):
            raise TemporaryFailure(f"catalog store unavailable while {what}: {text}") from exc
        raise ImportFailure(f"{what}: {text}", reason="CatalogError") from exc


_TRANSPORT = re.compile(
    r"error sending request|connection refused|timed out|dns error|connect error|"
    r"status code: 5\d\d",
    re.IGNORECASE,
)
