"""A partitioned import: one import's merge spread over several Pods (docs/scaling.md).

Three steps, each a Kubernetes Job the operator starts when the previous one completed:

    prepare (1 Pod)     parse and validate the file, decide every row (keys, errors, the
                        error policy), split the accepted rows by bucket and put them in
                        the store with a plan; the error report is final here.
    merge (N Pods)      an Indexed Job: Pod i merges the buckets b with b % N == i, each
                        with the same bucket of the version the plan was made against,
                        uploads the buckets' new files into the table (invisible until a
                        commit names them) and records what it did.
    commit (1 Pod)      all buckets in ONE Delta commit, so a reader never sees part of
                        an import; then the result document, as a one-Pod import's.

Each step is the one-Pod engine (runner.py) with one part of its work: the same bucket
merge, the same commit with its exactly-once check, the same result. What a step hands on
lives in the import's own folder of the catalog store (`stage-*` documents; the operator
deletes them when the import ends), every file named in the plan, so no step lists.

If the catalog moved between prepare and commit (a rollback through the API), the commit
step imports the file again from the start, in its own Pod, as a one-Pod import would
after losing a commit race: the buckets were merged against a version that is gone.
"""

from __future__ import annotations

import dataclasses
import shutil
from datetime import datetime
from pathlib import Path

import duckdb
from pydantic import BaseModel

from productimport.engine.catalog import BUCKET_COLUMN, STEP_DOCUMENT_PREFIX, DataFile, Head
from productimport.engine.errors import ImportFailure
from productimport.engine.merge import Verdicts
from productimport.engine.parse import sql_string
from productimport.engine.presets import Projection
from productimport.engine.relations import INCOMING_SHAPE, KEYED_BUCKET
from productimport.engine.runner import (
    INLINE_ERRORS,
    BucketMerge,
    ImportRun,
    _Merged,
    bounded_partitioned_writes,
    buckets_to_merge,
    combined,
    transfer,
)
from productimport.engine.storecheck import check_conditional_writes
from productimport.models.product import ErrorRecord, ImportCounts, ImportResult

PREFIX = STEP_DOCUMENT_PREFIX  # every document a partitioned import hands on
PLAN = f"{PREFIX}plan.json"
SHAPE = f"{PREFIX}shape.parquet"
REJECTED_BUCKET = "rejected_bucket"  # the rejected rows' numbers among KEYED_BUCKET's


def part_document(worker: int) -> str:
    return f"{PREFIX}part-{worker}.json"


class Plan(BaseModel):
    """What the prepare step decided, for the merge and commit steps."""

    base_version: int
    has_table: bool
    buckets: int
    present: list[str]  # the projection's present columns (merge.merge)
    now: datetime  # one timestamp for every bucket's created/updated products
    incoming: dict[int, list[str]]  # bucket -> its accepted rows' documents
    keys: dict[int, list[str]]  # bucket -> documents of its rows' keys and verdicts
    counts: ImportCounts  # rows and rejected; the merge adds the rest
    errors_ref: str
    errors: list[ErrorRecord]  # the first few, inline in the result


class MergedBucket(BucketMerge):
    data_file: dict | None = None  # the uploaded file (DataFile's fields); None: no file


class Part(BaseModel):
    """What one merge Pod did."""

    worker: int
    workers: int
    merged: list[MergedBucket]


class _Prepared(Exception):
    """The prepare step is done: its plan, to be written once the error report is."""

    def __init__(self, plan: Plan) -> None:
        super().__init__("prepared")
        self.plan = plan


class PartitionedRun(ImportRun):
    """The one-Pod engine, running one step of a partitioned import (options.stage)."""

    def _run(self, con: duckdb.DuckDBPyConnection, workdir: Path) -> ImportResult | None:
        stage = self.options.stage
        if stage == "merge":
            self._merge_part(con, workdir)
            return None
        if stage == "commit":
            return self._commit(con, workdir)
        try:  # prepare: the one-Pod import, up to its merge (_merge_buckets below)
            return super()._run(con, workdir)
        except _Prepared as prepared:
            plan = prepared.plan
            plan.counts = self.state.counts
            plan.errors = self.state.errors[:INLINE_ERRORS]
            plan.errors_ref = self.store.ref(self._document("errors.csv"))
            self._put(PLAN, plan)
            self.progress.note(
                f"prepared {plan.counts.rows:,} rows in {len(plan.incoming)} of "
                f"{plan.buckets} buckets for {self.options.workers} merge Pods"
            )
            return None

    # -- prepare ---------------------------------------------------------------------
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
        if self.options.stage != "prepare":  # a commit step importing again, in one Pod
            return super()._merge_buckets(
                con, projection, directory, head, buckets, local, incoming_sql, verdicts
            )
        directory.mkdir(parents=True, exist_ok=True)
        self._stage(con, directory / "incoming", buckets, incoming_sql)
        con.execute(f"COPY (FROM {INCOMING_SHAPE}) TO {sql_string(str(directory / 'shape'))} "
                    "(FORMAT parquet)")  # fmt: skip
        # Bounded like the split: with DuckDB's default buffers this was the prepare
        # step's peak memory at 10M rows.
        with bounded_partitioned_writes(con, buckets):
            con.execute(f"""
                COPY (
                    SELECT k.rn, k.sku, k.{BUCKET_COLUMN},
                           k.rn IN (SELECT rn FROM {verdicts.row_errors}) AS rejected
                    FROM {verdicts.keyed} k WHERE k.{BUCKET_COLUMN} IS NOT NULL
                ) TO {sql_string(str(directory / "keys"))} (
                    FORMAT parquet, PARTITION_BY ({BUCKET_COLUMN})
                )
            """)
        uploads = {SHAPE: directory / "shape"}
        incoming: dict[int, list[str]] = {}
        keys: dict[int, list[str]] = {}
        for kind, found in (("incoming", incoming), ("keys", keys)):
            for part in sorted((directory / kind).glob(f"{BUCKET_COLUMN}=*/*.parquet")):
                bucket = int(part.parent.name.split("=", 1)[1])
                name = f"{PREFIX}{kind}-{bucket}-{part.name}"
                found.setdefault(bucket, []).append(name)
                uploads[name] = part
        transfer(
            lambda item: self.store.upload(self._document(item[0]), item[1]),
            uploads.items(),
            "upload",
        )
        now = con.execute("SELECT now()::TIMESTAMP").fetchone()[0]  # type: ignore[index]
        raise _Prepared(
            Plan(
                base_version=head.version,
                has_table=head.table is not None,
                buckets=buckets,
                present=sorted(projection.present),
                now=now,
                incoming=incoming,
                keys=keys,
                counts=ImportCounts(),
                errors_ref="",
                errors=[],
            )
        )

    # -- merge -------------------------------------------------------------------------
    def _merge_part(self, con: duckdb.DuckDBPyConnection, workdir: Path) -> None:
        """Merge this Pod's share of the buckets against the plan's version."""
        plan = self._plan()
        worker, workers = self.options.worker, self.options.workers
        if worker >= workers:
            raise ImportFailure(f"worker {worker} of {workers}: no such merge Pod")
        head = self.catalog.at_version(plan.base_version) if plan.has_table else Head(0, None)
        old = head.buckets or plan.buckets
        mine = [
            b
            for b in buckets_to_merge(self.options.mode, head, plan.buckets, set(plan.incoming))
            if b % workers == worker
        ]
        self.progress.stage("merging")
        self._fetch({SHAPE: workdir / "shape.parquet"})
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {INCOMING_SHAPE} AS "
            f"FROM read_parquet({sql_string(str(workdir / 'shape.parquet'))})"
        )
        merged: list[MergedBucket] = []
        for bucket in mine:
            directory = workdir / f"bucket-{bucket}"
            directory.mkdir()
            current = self._download(head.files_of(bucket % old), directory).get(bucket % old, [])
            incoming = self._fetch(
                {name: directory / name for name in plan.incoming.get(bucket, [])}
            )
            keys = self._fetch({name: directory / name for name in plan.keys.get(bucket, [])})
            self._bucket_verdicts(con, keys)
            one = self._merge_bucket(
                con, plan.present, directory, head, plan.buckets, bucket, current,
                _parquet(incoming) if incoming else f"FROM {INCOMING_SHAPE}",
                Verdicts(KEYED_BUCKET, REJECTED_BUCKET), plan.now,
            )  # fmt: skip
            data_file = None
            if one.changed and one.products:
                uploaded = self.catalog.upload(
                    directory / one.file, bucket, one.products, self.options.import_id
                )
                data_file = dataclasses.asdict(uploaded)
            merged.append(MergedBucket(**one.model_dump(), data_file=data_file))
            shutil.rmtree(directory)  # the Pod's disk holds one bucket at a time
        self._put(part_document(worker), Part(worker=worker, workers=workers, merged=merged))
        self.progress.note(f"merge Pod {worker} of {workers}: merged buckets {mine}")

    def _bucket_verdicts(self, con: duckdb.DuckDBPyConnection, keys: list[Path]) -> None:
        """KEYED_BUCKET and REJECTED_BUCKET: the bucket's rows' keys, and the numbers of
        its rejected rows, as the prepare step decided them."""
        empty = "SELECT NULL::BIGINT AS rn, NULL::VARCHAR AS sku, false AS rejected LIMIT 0"
        source = _parquet(keys) if keys else empty
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {KEYED_BUCKET} AS "
            f"SELECT rn, sku, rejected FROM ({source})"
        )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {REJECTED_BUCKET} AS "
            f"SELECT rn FROM {KEYED_BUCKET} WHERE rejected"
        )

    # -- commit ------------------------------------------------------------------------
    def _commit(self, con: duckdb.DuckDBPyConnection, workdir: Path) -> ImportResult | None:
        plan = self._plan()
        head = self.catalog.head()
        if head.version != plan.base_version or (head.table is not None) != plan.has_table:
            self.progress.note(
                f"the catalog moved from version {plan.base_version} to {head.version} "
                "since this import was prepared; importing the file again in this Pod"
            )
            return super()._run(con, workdir)
        self._check_fence(head)
        merged = [m for part in self._parts() for m in part.merged]
        wanted = buckets_to_merge(self.options.mode, head, plan.buckets, set(plan.incoming))
        if sorted(m.bucket for m in merged) != wanted:
            raise ImportFailure(
                f"internal check failed: the merge Pods merged buckets "
                f"{sorted(m.bucket for m in merged)}, the plan needs {wanted}; nothing was "
                "committed",
                reason="InternalError",
            )
        outcome = combined(head, plan.buckets, list(merged), [])
        counts = plan.counts.model_copy()
        outcome.add_to(counts)
        self.state.counts, self.state.errors = counts, plan.errors
        if self.options.dry_run or not outcome.content_changed:
            note = "dry run, nothing committed" if self.options.dry_run else "catalog unchanged"
            return self._succeeded(counts, head.version, plan.errors_ref, plan.errors, note=note)
        self.progress.stage("committing", rows=counts.rows)
        check_conditional_writes(self.store, self.catalog.key(".conditional-writes"))
        added = [DataFile(**m.data_file) for m in merged if m.data_file is not None]
        result = self._publish(
            head, plan.buckets, outcome, added, counts, plan.errors_ref, plan.errors
        )
        if result is not None:
            return result
        self.progress.note("another import committed first; importing the file again in this Pod")
        return super()._run(con, workdir)

    # -- the documents steps hand on ---------------------------------------------------
    def _put(self, name: str, document: BaseModel) -> None:
        self.store.put(
            self._document(name), document.model_dump_json().encode(), "application/json"
        )

    def _get(self, name: str, missing: str) -> bytes:
        found = self.store.get_with_etag(self._document(name))
        if found is None:
            raise ImportFailure(
                f"internal check failed: {missing} ({self.store.ref(self._document(name))} "
                "is missing); nothing was committed",
                reason="InternalError",
            )
        return found[0]

    def _plan(self) -> Plan:
        return Plan.model_validate_json(self._get(PLAN, "the prepare step left no plan"))

    def _parts(self) -> list[Part]:
        workers = self.options.workers
        parts = [
            Part.model_validate_json(
                self._get(part_document(i), f"merge Pod {i} of {workers} left no record")
            )
            for i in range(workers)
        ]
        for part in parts:
            if part.workers != workers:
                raise ImportFailure(
                    f"internal check failed: merge Pod {part.worker} split the buckets "
                    f"{part.workers} ways, this step expects {workers}; nothing was committed",
                    reason="InternalError",
                )
        return parts

    def _fetch(self, documents: dict[str, Path]) -> list[Path]:
        """This import's documents `documents` names, downloaded to their paths."""
        transfer(
            lambda item: self.store.download(self._document(item[0]), item[1]),
            documents.items(),
            "download",
        )
        return list(documents.values())


def _parquet(files: list[Path]) -> str:
    paths = ", ".join(sql_string(str(f)) for f in files)
    return f"SELECT * FROM read_parquet([{paths}], hive_partitioning = false)"
