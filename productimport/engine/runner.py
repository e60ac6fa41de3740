"""One import, start to finish: fetch, parse, validate, merge, commit, report.

The file is parsed and projected once; validation against the catalog, the merge and
the commit run in a loop that starts again from the new current version when another
writer moved the catalog pointer first (optimistic concurrency).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import duckdb
from pydantic import BaseModel

from productimport.engine import sandbox
from productimport.engine.catalog import (
    BUCKET_COLUMN,
    RECENT_COMMITS,
    Catalog,
    DataFile,
    Head,
    bucket_count_for,
    bucket_of,
)
from productimport.engine.errors import (
    CommitConflict,
    ErrorPolicyExceeded,
    ImportFailure,
    InvalidOptions,
    ParseError,
    PreconditionFailed,
    ResourcesExhausted,
)
from productimport.engine.lines import record_start_lines, records_for_valid_rows
from productimport.engine.merge import (
    INCOMING_COLUMNS,
    MergeCounts,
    Verdicts,
    accepted_by_key,
    accepted_by_rn,
    build_keyed,
    forced_join_order,
    load_current,
    merge,
)
from productimport.engine.objectstore import ObjectStore, open_store
from productimport.engine.options import ImportOptions, InputFormat, Mode
from productimport.engine.parse import (
    CsvScan,
    Malformed,
    check_rows_read,
    csv_error,
    define_raw,
    first_line,
    inspect_csv,
    malformed_csv_records,
    materialise_raw,
    read_json,
    sql_string,
)
from productimport.engine.presets import Projection, project
from productimport.engine.progress import ProgressReporter
from productimport.engine.relations import (
    CHECKED,
    CHECKED_ROWS,
    CURRENT_BUCKET,
    FIRST_PASS,
    INCOMING_SHAPE,
    KEYED_BUCKET,
    KEYED_BY_BUCKET,
    RAW,
    RAW_UNNUMBERED,
    STAGED,
    STAGED_UNNUMBERED,
    TYPED,
    TYPED_UNNUMBERED,
)
from productimport.engine.source import LocalSource, describe, fetch, local_path
from productimport.engine.storecheck import check_conditional_writes
from productimport.engine.validate import (
    CHECKED_FIELDS,
    EXISTENCE_MODES,
    RAW_OF,
    build_row_errors,
    checked_view_sql,
    first_pass_sql,
    typed_sql,
)
from productimport.models.product import ErrorRecord, ImportCounts, ImportResult

INLINE_ERRORS = 10
VALUE_LIMIT = 200
COMMIT_ATTEMPTS = 5
# DuckDB's own default is 80% of the machine's memory, far more than an import needs:
# with a cap, joins and sorts spill to the temp directory instead of growing.
DEFAULT_MEMORY_LIMIT = "800MB"
# zstd level 1: most of zstd's size win for little of its writing time (DUCKDB-NOTES.md).
# Parquet's version 2 pages: 6% fewer instructions to write a 1M-product snapshot (perf
# stat: 25.5 G against 27.2 G for a read and rewrite), a 6% smaller file, the same cost
# to read; DuckDB, Arrow and Spark read them.
# The first scan's malformed records (every later scan records its own, and they are
# the same records): the error report's malformed rows.
REJECTS = "reject_errors"
SNAPSHOT_PARQUET = (
    "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 61440, "
    "PARQUET_VERSION V2"
)
# The accepted rows split by bucket. zstd at level 1 costs no more CPU than writing
# uncompressed (3M rows: 18 s either way, 23 s at zstd's default level 3) and writes an
# eighth of the bytes; see flush_threshold for the memory.
STAGE_PARQUET = (
    f"FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, PARTITION_BY ({BUCKET_COLUMN})"
)


def flush_threshold(buckets: int) -> int:
    """Rows a partitioned COPY buffers per bucket and thread before writing them out.

    DuckDB's default (524,288) keeps every bucket's rows in memory up to that count:
    sixteen buckets fill a 1 GB limit, and the COPY thrashes (3M rows: 3x the CPU of a
    plain CSV -> Parquet, 1.1 GB peak). About 80,000 rows over all buckets: 1.4x, 0.47 GB
    (measured 2026-11-29, docs/performance.md)."""
    return max(1_000, 80_000 // buckets)


@contextlib.contextmanager
def bounded_partitioned_writes(con: duckdb.DuckDBPyConnection, buckets: int) -> Iterator[None]:
    """Partitioned COPYs buffering flush_threshold(buckets) rows per bucket and thread."""
    con.execute(f"SET partitioned_write_flush_threshold = {flush_threshold(buckets)}")
    try:
        yield
    finally:
        con.execute("RESET partitioned_write_flush_threshold")


# Files moved to or from the store at a time.
TRANSFERS = 4
T = TypeVar("T")
R = TypeVar("R")


def transfer(work: Callable[[T], R], items: Iterable[T], kind: str) -> list[R]:
    """`work` over `items`, TRANSFERS at a time: each file is a round trip to the store."""
    with ThreadPoolExecutor(max_workers=TRANSFERS, thread_name_prefix=kind) as pool:
        return list(pool.map(work, items))


@dataclass
class _Bucket:
    """A bucket the import changed: its new file (`rows` 0: the bucket is now empty)."""

    bucket: int
    path: Path
    rows: int


@dataclass
class _Merged:
    counts: MergeCounts
    products: int
    changed: list[_Bucket]  # the buckets with a new file
    replaced: list[int]  # the buckets (of the base version) whose files go

    @property
    def content_changed(self) -> bool:
        return bool(self.counts.created or self.counts.updated or self.counts.deleted)

    def add_to(self, counts: ImportCounts) -> None:
        """The import's counts (rows, rejected) completed with what the merge did."""
        counts.created, counts.updated = self.counts.created, self.counts.updated
        counts.unchanged, counts.deleted = self.counts.unchanged, self.counts.deleted


class BucketMerge(BaseModel):
    """What merging one bucket did (also a partitioned import's record of it)."""

    bucket: int
    created: int
    updated: int
    unchanged: int
    deleted: int
    products: int  # in the bucket's new file
    before: int  # in the bucket before (0 for a split, whose old files all go)
    changed: bool  # the bucket gets a new file (or, with no products, none)
    file: str  # the new file's name in the merge's directory


def buckets_to_merge(mode: Mode, head: Head, buckets: int, staged: set[int]) -> list[int]:
    """The buckets an import must merge: those with rows of the file, every bucket of a
    replace (it deletes what the file leaves out) that has products, and all of them
    when the catalog is split to more buckets."""
    old = head.buckets or buckets
    if old != buckets:
        return list(range(buckets))
    return [
        b
        for b in range(buckets)
        if b in staged or (mode is Mode.replace and head.files_of(b % old))
    ]


def combined(
    head: Head, buckets: int, merged: list[BucketMerge], changed: list[_Bucket]
) -> _Merged:
    """The import's counts and the buckets its commit replaces, from its bucket merges."""
    total = MergeCounts(0, 0, 0, 0, head.products)
    for m in merged:
        total.created += m.created
        total.updated += m.updated
        total.unchanged += m.unchanged
        total.deleted += m.deleted
        total.products += m.products - m.before
    old = head.buckets or buckets
    if old != buckets:
        total.products = sum(m.products for m in merged)
        return _Merged(total, total.products, changed, list(range(old)))
    return _Merged(total, total.products, changed, [m.bucket for m in merged if m.changed])


def _bucket_count(head: Head, incoming_rows: int) -> int:
    """The bucket count to write with: the table's, doubled as often as it takes for a
    catalog that has outgrown it (a split: docs/loader-contract.md), never fewer."""
    wanted = bucket_count_for(max(head.products, incoming_rows))
    if head.buckets is None:
        return wanted
    # Split only well past the threshold, not back and forth around it.
    return head.buckets if wanted < 2 * head.buckets else wanted


@dataclass
class _Input:
    """The source file and how its columns map onto products."""

    source: LocalSource
    headers: list[str]
    projection: Projection
    scan: CsvScan | None = None
    malformed: list[Malformed] = field(default_factory=list)
    raw_rows: int | None = None  # None until the first scan of a streamed file


def _file_stamp(path: Path) -> tuple[int, int]:
    """Size and mtime: a file scanned twice must not change in between."""
    info = path.stat()
    return info.st_size, info.st_mtime_ns


# A spreadsheet evaluates a cell that starts with one of these as a formula (=HYPERLINK,
# =cmd|..., @SUM): a report of a hostile file must not run its text when opened.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


def spreadsheet_safe(cell: str) -> str:
    """The cell as text a spreadsheet shows but never evaluates (OWASP's CSV injection
    advice: a leading apostrophe); plain numbers such as -1 stay as they are."""
    if cell.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def result_of(
    options: ImportOptions, phase: str, reason: str, message: str, **fields: object
) -> ImportResult:
    """The one way a result document is made: the import's identity and options, its
    outcome, and what else is known (counts, version, errors, times)."""
    now = datetime.now(UTC)
    return ImportResult.model_validate(
        {
            "importId": options.import_id,
            "namespace": options.namespace,
            "catalog": options.catalog,
            "phase": phase,
            "reason": reason,
            "message": message,
            "dryRun": options.dry_run,
            "mode": options.mode.value,
            "startedAt": now,
            "completedAt": now,
            **fields,
        }
    )


@dataclass
class _RunState:
    """What an import knows so far, for the result of a run that fails part way."""

    counts: ImportCounts = field(default_factory=ImportCounts)
    errors: list[ErrorRecord] = field(default_factory=list)


def _reused_result(catalog: Catalog, options: ImportOptions) -> ImportResult | None:
    """Idempotency: a committed import id is never applied twice."""
    import_id = options.import_id
    stored = catalog.store.get_with_etag(catalog.import_key(import_id, "result.json"))
    if stored is not None:
        result = ImportResult.model_validate_json(stored[0])
        if result.phase == "Succeeded" and not result.dryRun:
            return result
    manifest = catalog.find_import(import_id)
    if manifest is None:
        return None
    # Committed, but the run was killed before it wrote its result: rebuild it.
    counts = manifest.counts or ImportCounts()
    return result_of(
        options,
        "Succeeded",
        "ImportSucceeded",
        summary(counts) + f"; committed as version {manifest.version}",
        counts=counts,
        catalogVersion=manifest.version,
        errorsRef=catalog.store.ref(catalog.import_key(import_id, "errors.csv")),
        startedAt=None,
        completedAt=manifest.createdAt,
    )


class Superseded(ImportFailure):
    """The catalog already holds a commit of an import admitted after this one (a higher
    fencing sequence): committing now would put an older file over a newer one. Final:
    a retry finds the same newer commit (exit 65, not retried)."""

    reason = "Superseded"


@dataclass(frozen=True)
class _Fence:
    """The newest commit of the catalog that carries a fencing sequence."""

    sequence: int
    import_id: str | None
    version: int


def _newest_fence(catalog: Catalog, head: Head) -> _Fence | None:
    """The sequence of the newest commit that has one, among the head's recent commits
    (commits without one, such as a CLI import's, a rollback or a vacuum, are passed
    over: they do not make an older import newer)."""
    if head.table is None:
        return None
    found = catalog.newest_record_with(head.table, "sequence", depth=RECENT_COMMITS)
    if found is None:
        return None
    version, record = found
    return _Fence(int(record["sequence"]), record.get("importId"), version)


def summary(counts: ImportCounts) -> str:
    return (
        f"{counts.rows} rows: {counts.created} created, {counts.updated} updated, "
        f"{counts.unchanged} unchanged, {counts.deleted} deleted, {counts.rejected} rejected"
    )


class ImportRun:
    def __init__(
        self,
        options: ImportOptions,
        store: ObjectStore | None = None,
        progress: ProgressReporter | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.options = options
        self.store = catalog.store if catalog is not None else store or open_store(options.store)
        self.catalog = catalog or Catalog(self.store, options.namespace, options.catalog)
        self.progress = progress or ProgressReporter()
        self.started = datetime.now(UTC)
        self.state = _RunState()

    def _document(self, name: str) -> str:
        return self.catalog.import_key(self.options.import_id, name)

    # -- public ----------------------------------------------------------------------
    def run(self) -> ImportResult | None:
        self.progress.attach(self.catalog, self.options.import_id)
        # A merge step never commits: it has nothing to reuse.
        reuse = not self.options.dry_run and self.options.stage != "merge"
        reused = _reused_result(self.catalog, self.options) if reuse else None
        if reused is not None:
            self._write_result(reused)
            self.progress.stage("done")
            return reused
        with tempfile.TemporaryDirectory(prefix="productimport-") as tmp:
            workdir = Path(tmp)
            con = self._connect(workdir)
            try:
                result = self._run(con, workdir)
            except (ImportFailure, duckdb.OutOfMemoryException) as caught:
                failure = self._as_failure(caught)
                result = self._failed(failure.reason, failure.message)
                self._write_result(result)
                self.progress.stage("done")
                raise _WithResult(failure, result) from caught
            finally:
                con.close()
        if result is not None:  # None: a step of a partitioned import, not its end
            self._write_result(result)
        self.progress.stage("done")
        return result

    # -- steps -----------------------------------------------------------------------
    def _connect(self, workdir: Path) -> duckdb.DuckDBPyConnection:
        # The SQL may touch this import's work directory (the fetched source, the
        # snapshots, the spill) and a local source file where it lies; nothing else.
        local = local_path(self.options.source)
        con = sandbox.connect(
            directories=[workdir],
            files=[local] if local and local.is_file() else [],
            config={
                "temp_directory": str(workdir / "duckdb-spill"),
                # Nothing here depends on the order rows come out of a query (record
                # numbers come from a streaming window that keeps file order anyway);
                # keeping it would buffer whole results before writing them.
                "preserve_insertion_order": False,
            },
            lock=False,  # merge.py sets and resets disabled_optimizers around one join
        )
        con.execute(
            f"SET memory_limit = {sql_string(self.options.memory_limit or DEFAULT_MEMORY_LIMIT)}"
        )
        if self.options.threads:
            con.execute(f"SET threads = {int(self.options.threads)}")
        return con

    def _read(self, con: duckdb.DuckDBPyConnection, workdir: Path) -> _Input:
        """Fetch the source and find its columns. A CSV file of a one-row-per-record
        preset is left on disk and scanned twice, streaming; anything else is loaded."""
        self.progress.stage("reading")
        path, name = fetch(self.options.source, workdir)
        source = describe(path, name, self.options.format, self.options.gzip)
        if source.format is InputFormat.csv:
            scan = inspect_csv(source, self.options.csv)
            projection = project(self.options.preset, scan.headers, self.options.mapping)
            if projection.streamable:
                define_raw(con, scan, RAW, REJECTS)  # scanned by the first pass
                return _Input(source, scan.headers, projection, scan=scan)
            materialise_raw(con, scan, RAW, REJECTS)
            malformed = malformed_csv_records(con, scan, REJECTS)
            rows = con.execute(f"SELECT count(*) FROM {RAW}").fetchone()[0]  # type: ignore[index]
            check_rows_read(scan, rows, malformed)
            return _Input(
                source, scan.headers, projection, scan=scan, malformed=malformed, raw_rows=rows
            )
        raw = read_json(con, source, RAW)
        projection = project(self.options.preset, raw.headers, self.options.mapping)
        return _Input(source, raw.headers, projection, malformed=raw.malformed, raw_rows=raw.rows)

    def _checked(self, con: duckdb.DuckDBPyConnection, data: _Input, rejects: str) -> None:
        """Table CHECKED_ROWS (validate.first_pass_sql), views FIRST_PASS (its rows,
        numbered) and CHECKED (the suspect ones, for the field rules); a streamed file is
        scanned for it parsing only the columns the rules read.

        A streamed file is scanned in parallel, unnumbered, into a table that keeps
        insertion order (file order: SELECT and WHERE preserve it); a record's number is
        then its position in that table (rowid + 1), the same number row_number() OVER ()
        gives it, without the window that would run the whole pass on one thread.
        """
        projection = data.projection
        first_pass = first_pass_sql(projection, STAGED)
        if data.scan is not None and projection.streamable:
            wanted = {*CHECKED_FIELDS, *(RAW_OF.get(f, f) for f in projection.required)}
            only = {i for name, i in projection.field_columns.items() if name in wanted}
            define_raw(con, data.scan, RAW, rejects, only, numbered=False)
            con.execute("SET preserve_insertion_order = true")
            try:
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE {CHECKED_ROWS} AS "
                    f"SELECT * EXCLUDE (rn) FROM ({first_pass})"
                )
            finally:
                con.execute("SET preserve_insertion_order = false")
            numbered = f"SELECT rowid + 1 AS rn, * FROM {CHECKED_ROWS}"
        else:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {CHECKED_ROWS} AS {first_pass}")
            numbered = f"FROM {CHECKED_ROWS}"
        con.execute(f"CREATE OR REPLACE TEMP VIEW {FIRST_PASS} AS {numbered}")
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {CHECKED} AS {checked_view_sql(projection, FIRST_PASS)}"
        )

    def _first_pass(self, con: duckdb.DuckDBPyConnection, data: _Input) -> int:
        """The first pass (see _checked); the number of records it read."""
        projection = data.projection
        try:
            con.execute(f"CREATE TEMP VIEW {STAGED} AS {projection.sql}")  # reads RAW
            con.execute(f"CREATE TEMP VIEW {TYPED} AS {typed_sql(projection, STAGED)}")
        except duckdb.Error as exc:
            raise ParseError(f"cannot map the file's columns: {exc}") from exc
        try:
            self._checked(con, data, REJECTS)
        except duckdb.Error as exc:
            if data.raw_rows is None and data.scan is not None:  # the file's first scan
                raise csv_error(data.scan, exc) from exc
            raise ParseError(f"cannot map the file's columns: {exc}") from exc
        staged_rows = con.execute(f"SELECT count(*) FROM {CHECKED_ROWS}").fetchone()[0]  # type: ignore[index]
        if data.raw_rows is None and data.scan is not None:
            # A streamed preset keeps every record: the first pass has counted them.
            data.malformed = malformed_csv_records(con, data.scan, REJECTS)
            data.raw_rows = staged_rows
            check_rows_read(data.scan, staged_rows, data.malformed)
        self.progress.stage("validating", rows=data.raw_rows + len(data.malformed))
        missing = [f for f in projection.required if RAW_OF.get(f, f) not in projection.present]
        if missing and data.raw_rows:
            raise ParseError(
                f"the file has no column for the required field(s) "
                f"{', '.join(repr(f) for f in missing)} under the {self.options.preset.value} "
                f"preset (columns: {', '.join(data.headers)}); map one with --mapping "
                f"COLUMN=FIELD or choose another preset"
            )
        return staged_rows

    def _run(self, con: duckdb.DuckDBPyConnection, workdir: Path) -> ImportResult | None:
        data = self._read(con, workdir)
        source = data.source
        stamp = _file_stamp(source.path)
        staged_rows = self._first_pass(con, data)
        malformed = data.malformed

        for attempt in range(COMMIT_ATTEMPTS):
            head = self.catalog.head()
            self._check_fence(head)
            buckets = _bucket_count(head, staged_rows)
            local = self._download(head.files, workdir / f"v{head.version}")
            current = load_current(con, [path for paths in local.values() for path in paths])
            if attempt:  # the first pass was dropped to leave the merge its memory
                self._checked(con, data, f"{REJECTS}_{attempt}_checked")
            keyed = build_keyed(
                con, data.projection, FIRST_PASS, current, buckets,
                existence=self.options.mode in EXISTENCE_MODES,
            )  # fmt: skip
            verdicts = Verdicts(
                keyed,
                build_row_errors(
                    con, data.projection, self.options.mode, bool(head.files), CHECKED, keyed
                ),
            )
            con.execute(f"DROP VIEW {CHECKED}")
            con.execute(f"DROP VIEW {FIRST_PASS}")
            con.execute(f"DROP TABLE {CHECKED_ROWS}")
            # The error records' line numbers come from a scan of the file in Python
            # (seconds for a large file, on one core), which runs while DuckDB merges.
            # The report is written whatever happens next, failures included.
            error_records = self._start_error_records(con, verdicts.row_errors, source, malformed)
            try:
                (rejected_rows,) = con.execute(  # type: ignore[misc]
                    f"SELECT count(DISTINCT rn) FROM {verdicts.row_errors}"
                ).fetchone()
                counts = ImportCounts(
                    rows=staged_rows + len(malformed), rejected=rejected_rows + len(malformed)
                )
                self.state.counts = counts
                self._check_policy(counts)
                self.progress.stage("merging", rows=counts.rows)
                merged = self._merge_buckets(
                    con, data.projection, workdir / f"attempt-{attempt}", head, buckets, local,
                    self._incoming(con, data, attempt, verdicts), verdicts,
                )  # fmt: skip
                if _file_stamp(source.path) != stamp:
                    raise ParseError(f"{source.name} changed while it was being imported")
            finally:
                errors = error_records()
                errors_ref = self._write_errors(workdir, errors)
            merged.add_to(counts)
            if self.options.dry_run or not merged.content_changed:
                return self._succeeded(
                    counts,
                    head.version,
                    errors_ref,
                    errors,
                    note="dry run, nothing committed"
                    if self.options.dry_run
                    else "catalog unchanged",
                )
            self.progress.stage("committing", rows=counts.rows)
            if attempt == 0:  # a commit is only as safe as the store's conditional PUT
                check_conditional_writes(self.store, self.catalog.key(".conditional-writes"))
            added = self._upload(merged.changed)
            result = self._publish(head, buckets, merged, added, counts, errors_ref, errors)
            if result is not None:
                return result
            self.progress.note("another import committed first; merging again")
        raise CommitConflict(
            f"the catalog kept changing under this import ({COMMIT_ATTEMPTS} attempts)"
        )

    def _publish(
        self,
        head: Head,
        buckets: int,
        merged: _Merged,
        added: list[DataFile],
        counts: ImportCounts,
        errors_ref: str,
        errors: list[ErrorRecord],
    ) -> ImportResult | None:
        """Commit the merged buckets' files on top of `head`: the result, or None when
        another import committed first (the diff must be made again)."""
        record = {
            "importId": self.options.import_id,
            "counts": counts.model_dump(),
            "products": merged.products,
            "buckets": buckets,
            "createdAt": datetime.now(UTC).isoformat(),
        }
        if self.options.sequence is not None:
            record["sequence"] = self.options.sequence
        try:
            version = self.catalog.commit(head, buckets, merged.replaced, added, record)
        except PreconditionFailed:
            # Exactly once: the commit that lost may be this import's own (a PUT whose
            # response was lost, retried into a 412). Its id in the history says so;
            # merging again would apply the file twice.
            committed = self.catalog.find_import(self.options.import_id)
            if committed is None:
                return None
            self.progress.note("this import's own commit had landed; not merging again")
            return self._succeeded(
                committed.counts or counts, committed.version, errors_ref, errors,
                note=f"committed as version {committed.version}",
            )  # fmt: skip
        return self._succeeded(
            counts, version, errors_ref, errors, note=f"committed as version {version}"
        )

    def _check_fence(self, head: Head) -> None:
        """Order per catalog: an import never commits over a version that an import
        admitted after it (a higher sequence) committed; it is Superseded instead."""
        own = self.options.sequence
        if own is None or self.options.dry_run:
            return
        newest = _newest_fence(self.catalog, head)
        if newest is None or newest.sequence <= own:
            return
        raise Superseded(
            f"import {newest.import_id} (sequence {newest.sequence}), admitted after this one "
            f"(sequence {own}), has already committed version {newest.version} of catalog "
            f"{self.catalog.prefix}: this import is superseded and commits nothing; import "
            "its file again to apply it on top"
        )

    def _download(self, files: list[DataFile], directory: Path) -> dict[int, list[Path]]:
        """These files of the table (a version's, or a bucket's of it), local, by bucket."""
        directory.mkdir(parents=True, exist_ok=True)
        targets = [(f, directory / f.path.replace("/", "_")) for f in files]
        transfer(lambda item: self.catalog.download(*item), targets, "download")
        local: dict[int, list[Path]] = {}
        for data_file, path in targets:
            local.setdefault(data_file.bucket, []).append(path)
        return local

    def _upload(self, changed: list[_Bucket]) -> list[DataFile]:
        """Put the changed buckets' files in place (none for a bucket left empty)."""
        import_id = self.options.import_id
        written = [b for b in changed if b.rows]
        return transfer(
            lambda b: self.catalog.upload(b.path, b.bucket, b.rows, import_id), written, "upload"
        )

    def _merge_buckets(
        self,
        con: duckdb.DuckDBPyConnection,
        projection: Projection,
        directory: Path,
        head: Head,
        buckets: int,
        local: dict[int, list[Path]],
        incoming_sql: str,
        verdicts: Verdicts,
    ) -> _Merged:
        """Merge bucket by bucket: the accepted rows are written once, split by bucket,
        then each bucket's rows are merged with that bucket of the current version, so no
        step holds more than a bucket's share of the catalog (docs/architecture.md)."""
        directory.mkdir(parents=True, exist_ok=True)
        old = head.buckets or buckets
        split_rows = buckets > 1 or old != buckets
        staged = (
            self._stage(con, directory / "incoming", buckets, incoming_sql)
            if split_rows
            # One bucket: the accepted rows go straight into its merge, as one stream.
            else {0: incoming_sql}
        )
        keyed = verdicts.keyed
        if split_rows:
            # The rows' keys in bucket order and nothing else, in place of the wide KEYED
            # (dropped: the staged rows no longer need it) that every bucket's merge would
            # scan whole; a bucket's keys are then a few row groups, as a partitioned
            # import's merge Pods read them (10M rows, 16 buckets: 179 s and 336 CPU-s
            # against 201 s and 374 CPU-s, docs/performance.md). Appended a bucket at a
            # time, not sorted: 16 appends at 10M rows take what the sort took (about 1 s),
            # and the sort was the import's peak memory (1,177 MiB against 1,117).
            narrow = f"SELECT rn, sku, {BUCKET_COLUMN} FROM {keyed}"
            con.execute(f"CREATE OR REPLACE TEMP TABLE {KEYED_BY_BUCKET} AS {narrow} WHERE false")
            for bucket in range(buckets):
                con.execute(
                    f"INSERT INTO {KEYED_BY_BUCKET} {narrow} WHERE {BUCKET_COLUMN} = {bucket}"
                )
            con.execute(f"DROP TABLE {keyed}")
            keyed = KEYED_BY_BUCKET
        now = con.execute("SELECT now()::TIMESTAMP").fetchone()[0]  # type: ignore[index]
        merged: list[BucketMerge] = []
        for bucket in buckets_to_merge(self.options.mode, head, buckets, set(staged)):
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW {KEYED_BUCKET} AS "
                f"SELECT * FROM {keyed} WHERE {BUCKET_COLUMN} = {bucket}"
            )
            one = self._merge_bucket(
                con, projection.present, directory, head, buckets, bucket,
                local.get(bucket % old, []), staged.get(bucket, f"FROM {INCOMING_SHAPE}"),
                Verdicts(KEYED_BUCKET, verdicts.row_errors), now,
            )  # fmt: skip
            merged.append(one)
        changed = [_Bucket(m.bucket, directory / m.file, m.products) for m in merged if m.changed]
        return combined(head, buckets, merged, changed)

    def _merge_bucket(
        self,
        con: duckdb.DuckDBPyConnection,
        present: Iterable[str],
        directory: Path,
        head: Head,
        buckets: int,
        bucket: int,
        current_files: list[Path],
        incoming_sql: str,
        verdicts: Verdicts,
        now: datetime,
    ) -> BucketMerge:
        """Merge one bucket: its rows of the file (`incoming_sql`) with its products in
        `current_files`, into directory/bucket-N.parquet (deleted when nothing changed).
        `verdicts` holds that bucket's keys only."""
        split = (head.buckets or buckets) != buckets
        # A split: new bucket b holds the products of old bucket b % old whose key
        # hashes to b, so every new bucket is written and every old file replaced.
        keep = f"{bucket_of('sku', buckets)} = {bucket}" if split else None
        current = load_current(con, current_files, CURRENT_BUCKET, keep)
        name = f"{BUCKET_COLUMN}-{bucket}.parquet"
        counts = merge(
            con, present, self.options.mode, self.options.import_id, directory / name,
            SNAPSHOT_PARQUET, incoming_sql, current, verdicts, now,
        )  # fmt: skip
        changed = bool(split or counts.created or counts.updated or counts.deleted)
        if not changed:
            (directory / name).unlink(missing_ok=True)
        before = 0 if split else sum(f.rows for f in head.files_of(bucket))
        return BucketMerge(
            bucket=bucket, **dataclasses.asdict(counts), before=before, changed=changed, file=name
        )

    def _stage(
        self, con: duckdb.DuckDBPyConnection, stage: Path, buckets: int, incoming_sql: str
    ) -> dict[int, str]:
        """Write the accepted rows once, split by bucket, only the columns the merge
        reads; SQL for each bucket that has any (and the empty shape, INCOMING_SHAPE, for
        the others)."""
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {INCOMING_SHAPE} AS "
            f"SELECT {INCOMING_COLUMNS} FROM ({incoming_sql}) LIMIT 0"
        )
        with bounded_partitioned_writes(con, buckets), forced_join_order(con):
            con.execute(
                f"COPY (SELECT {INCOMING_COLUMNS}, "
                f"{bucket_of('sku', buckets)} AS {BUCKET_COLUMN} "
                f"FROM ({incoming_sql})) TO {sql_string(str(stage))} ({STAGE_PARQUET})"
            )
        return {
            int(part.name.split("=", 1)[1]): (
                f"SELECT * FROM read_parquet({sql_string(str(part / '*.parquet'))}, "
                "hive_partitioning = false)"
            )
            for part in stage.glob(f"{BUCKET_COLUMN}=*")
        }

    def _incoming(
        self, con: duckdb.DuckDBPyConnection, data: _Input, attempt: int, verdicts: Verdicts
    ) -> str:
        """SQL for the accepted rows, typed, for the merge: the file's second pass.

        Numbering records needs DuckDB to scan the file in order, on one thread. When a
        row's key is its own sku (every preset but Elastic Path's), the key alone says
        whether a row is accepted, except among rows sharing a key, where the first
        occurrence wins: so the second pass reads the file in parallel, unnumbered, and
        takes those few first occurrences by number in a small extra scan.
        """
        scan = data.scan
        if scan is None or not data.projection.streamable:
            return accepted_by_rn(verdicts, TYPED)
        # Every scan records its own rejects: the first one's are final.
        define_raw(con, scan, RAW, f"{REJECTS}_{attempt}_numbered")
        if data.projection.match_by_reference:
            return accepted_by_rn(verdicts, TYPED)
        unnumbered = scan.sql(f"{REJECTS}_{attempt}_unnumbered")
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {RAW_UNNUMBERED} AS "
            f"SELECT NULL::BIGINT AS rn, * FROM {unnumbered}"
        )
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {STAGED_UNNUMBERED} AS "
            + data.projection.over(RAW_UNNUMBERED)
        )
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {TYPED_UNNUMBERED} AS "
            + typed_sql(data.projection, STAGED_UNNUMBERED)
        )
        return accepted_by_key(con, data.projection, verdicts, RAW, TYPED_UNNUMBERED)

    def _check_policy(self, counts: ImportCounts) -> None:
        policy = self.options.error_policy
        if counts.rows == 0:
            if self.options.mode is Mode.replace:
                raise InvalidOptions(
                    "replace mode with a file of no rows would delete the whole catalog; refusing"
                )
            return
        if counts.rejected == counts.rows:
            raise ErrorPolicyExceeded(f"all {counts.rows} rows were rejected; see the error report")
        if policy.maxErrors is not None and counts.rejected > policy.maxErrors:
            raise ErrorPolicyExceeded(
                f"{counts.rejected} of {counts.rows} rows were rejected, more than "
                f"maxErrors={policy.maxErrors}; nothing was imported"
            )
        ratio = counts.rejected / counts.rows
        if policy.maxErrorRatio is not None and ratio > policy.maxErrorRatio:
            raise ErrorPolicyExceeded(
                f"{counts.rejected} of {counts.rows} rows ({ratio:.1%}) were rejected, more "
                f"than maxErrorRatio={policy.maxErrorRatio:g}; nothing was imported"
            )

    # -- error records ---------------------------------------------------------------
    def _start_error_records(
        self,
        con: duckdb.DuckDBPyConnection,
        row_errors: str,
        source: LocalSource,
        malformed: list[Malformed],
    ) -> Callable[[], list[ErrorRecord]]:
        """Start finding the error records' physical lines in a thread; the returned
        function waits for it and gives all error records, sorted by line."""
        rows = con.execute(
            f"SELECT rn, column_name, code, message, value, ref_rn FROM {row_errors} "
            "ORDER BY rn, code"
        ).fetchall()
        malformed_records = [m.record for m in malformed]
        valid_rows = {r[0] for r in rows} | {r[5] for r in rows if r[5] is not None}
        record_of = records_for_valid_rows(valid_rows, malformed_records)
        spans = {m.record: m.text.rstrip("\r\n").count("\n") + 1 for m in malformed}
        # DuckDB releases the GIL while it runs a statement, so the scan gets a core of
        # its own whenever DuckDB leaves one.
        scanner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="line-scan")
        lines = scanner.submit(
            self._lines, source, list(record_of.values()) + malformed_records, spans
        )
        scanner.shutdown(wait=False)
        return lambda: self._error_records(rows, malformed, record_of, lines.result())

    def _error_records(
        self,
        rows: list[tuple],
        malformed: list[Malformed],
        record_of: dict[int, int],
        line_of: Callable[[int], int],
    ) -> list[ErrorRecord]:
        """All error records, sorted by line, with physical line numbers."""
        records: list[tuple[int, ErrorRecord]] = []
        for m in malformed:
            line = line_of(m.record)
            records.append(
                (
                    line,
                    ErrorRecord(
                        line=line,
                        column=m.column,
                        code="malformed_row",
                        message=f"the row could not be parsed: {m.message}",
                        value=_truncate(m.text),
                    ),
                )
            )
        for rn, column, code, message, value, ref_rn in rows:
            line = line_of(record_of[rn])
            if ref_rn is not None:
                message = message.replace("{ref_line}", str(line_of(record_of[ref_rn])))
            records.append(
                (
                    line,
                    ErrorRecord(
                        line=line, column=column, code=code, message=message, value=_truncate(value)
                    ),
                )
            )
        records.sort(key=lambda item: item[0])
        return [record for _, record in records]

    def _lines(
        self, source: LocalSource, records: list[int], spans: dict[int, int]
    ) -> Callable[[int], int]:
        """record number -> physical line (JSON arrays: the element's position)."""
        if source.format is InputFormat.json or not records:
            return lambda record: record
        header = 1 if (source.format is InputFormat.csv and self.options.csv.header) else 0
        quote = self.options.csv.quote if source.format is InputFormat.csv else None
        escape = self.options.csv.escape if source.format is InputFormat.csv else None
        starts = record_start_lines(
            source.path,
            compressed=source.gzip,
            quote=quote,
            escape=escape,
            wanted=[r - 1 + header for r in records],
            spans={r - 1 + header: n for r, n in spans.items()},
        )
        return lambda record: starts.get(record - 1 + header, record + header)

    def _write_errors(self, workdir: Path, errors: list[ErrorRecord]) -> str:
        """The full report: errors.csv for people (spreadsheet-safe), errors.json for
        programs (the values exactly as they were in the file)."""
        csv_path, json_path = workdir / "errors.csv", workdir / "errors.json"
        with open(csv_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["line", "column", "code", "message", "value"])
            for e in errors:
                cells = (e.column or "", e.code, e.message, e.value or "")
                writer.writerow([e.line, *map(spreadsheet_safe, cells)])
        with open(json_path, "w", encoding="utf-8") as handle:
            json.dump([e.model_dump() for e in errors], handle, ensure_ascii=False)
        self.store.upload(self._document("errors.csv"), csv_path, "text/csv")
        self.store.upload(self._document("errors.json"), json_path, "application/json")
        self.state.errors = errors
        return self.store.ref(self._document("errors.csv"))

    # -- results ---------------------------------------------------------------------
    def _succeeded(
        self,
        counts: ImportCounts,
        version: int,
        errors_ref: str,
        errors: list[ErrorRecord],
        note: str,
    ) -> ImportResult:
        return result_of(
            self.options,
            "Succeeded",
            "ImportSucceeded",
            f"{summary(counts)}; {note}",
            counts=counts,
            catalogVersion=version,
            errorsRef=errors_ref,
            errors=errors[:INLINE_ERRORS],
            startedAt=self.started,
        )

    def _as_failure(self, caught: ImportFailure | duckdb.OutOfMemoryException) -> ImportFailure:
        """Running out of memory is its own failure, also where parsing wrapped it."""
        if isinstance(caught, ImportFailure):
            if not isinstance(caught.__cause__, duckdb.OutOfMemoryException):
                return caught
            caught = caught.__cause__
        limit = self.options.memory_limit or DEFAULT_MEMORY_LIMIT
        return ResourcesExhausted(
            f"the import needed more memory than its DuckDB memory limit ({limit}) allows "
            f"even when spilling to disk ({first_line(caught)}); raise the limit (spec.job."
            "memoryLimit, with the container's memory limit above it) or split the file"
        )

    def _failed(self, reason: str, message: str) -> ImportResult:
        errors = self.state.errors
        head_version = 0
        with contextlib.suppress(ImportFailure):
            head_version = self.catalog.head().version
        return result_of(
            self.options,
            "Failed",
            reason,
            message,
            counts=self.state.counts,
            catalogVersion=head_version,
            errorsRef=self.store.ref(self._document("errors.csv")) if errors else None,
            errors=errors[:INLINE_ERRORS],
            startedAt=self.started,
        )

    def _write_result(self, result: ImportResult) -> None:
        try:
            self.store.put(
                self._document("result.json"),
                result.model_dump_json(indent=2).encode(),
                "application/json",
            )
        except ImportFailure:
            if result.phase == "Succeeded":
                raise


class _WithResult(Exception):
    """An ImportFailure together with the result document written for it."""

    def __init__(self, failure: ImportFailure, result: ImportResult) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.result = result


def _truncate(value: str | None) -> str | None:
    if value is None:
        return None
    return value if len(value) <= VALUE_LIMIT else value[: VALUE_LIMIT - 1] + "…"


def run_import(
    options: ImportOptions,
    store: ObjectStore | None = None,
    progress: ProgressReporter | None = None,
    catalog: Catalog | None = None,
) -> tuple[ImportResult | None, int]:
    """Run an import, or one step of a partitioned import; return its result (None: a
    step that is not the last succeeded) and the process exit code (see errors.py)."""
    kind = ImportRun
    if options.stage != "all":
        from productimport.engine.partitioned import PartitionedRun as kind
    try:
        return kind(options, store, progress, catalog).run(), 0
    except _WithResult as failed:
        return failed.result, failed.failure.exit_code
    except ImportFailure as failure:  # before a catalog could even be opened
        return result_of(options, "Failed", failure.reason, failure.message), failure.exit_code
