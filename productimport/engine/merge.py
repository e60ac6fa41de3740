"""Merging accepted rows into the current snapshot: counts and the next snapshot.

One full outer join in DuckDB, streamed to Parquet (a full snapshot rewrite, the shape
measured fastest in DUCKDB-NOTES.md). Semantics:
- a column the file does not have leaves that field of existing products untouched;
  a column it has but with an empty cell clears the field (status and commodity_type,
  which cannot be empty, keep their value or take the preset's default);
- attributes merge key by key, the file's values winning;
- a product whose merged fields equal its current ones counts as unchanged;
- replace mode deletes products the file does not mention, but never one whose row
  was rejected: a bad row must not cost the catalog a product.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from productimport.engine.catalog import bucket_of
from productimport.engine.errors import ImportFailure
from productimport.engine.options import Mode
from productimport.engine.parse import sql_string
from productimport.engine.presets import Projection
from productimport.engine.relations import CURRENT, KEYED, UNTOUCHED
from productimport.engine.validate import RAW_OF, fingerprint, typed_sql
from productimport.models.product import (
    CONTENT_FIELDS,
    DEFAULTED_FIELDS,
    PRODUCT_FIELDS,
    SNAPSHOT_COLUMNS,
)

EMPTY_SNAPSHOT = (
    "SELECT "
    + ", ".join(f"NULL::{kind} AS {name}" for name, kind in SNAPSHOT_COLUMNS.items())
    + " WHERE false"
)


@dataclass
class MergeCounts:
    created: int
    updated: int
    unchanged: int
    deleted: int
    products: int


# What a snapshot's content_digest column means, stored in the file's key-value metadata:
# a digest is trusted only by the same hash over the same fields (DuckDB does not promise
# hash() across versions); otherwise it is computed again from the fields.
CONTENT_DIGEST = f"(hash({', '.join(CONTENT_FIELDS)}) & 9223372036854775807)::BIGINT"
DIGEST_KEY = "productimport_content_digest"
DIGEST_SPEC = f"{CONTENT_DIGEST} duckdb {duckdb.__version__}"


def load_current(
    con: duckdb.DuckDBPyConnection,
    files: list[Path] | Path | None,
    name: str = CURRENT,
    where: str | None = None,
) -> str:
    """View `name`: the current products of these files (a whole catalog version, or one
    bucket of it; `where` keeps some of them), with attributes as entries and a
    content_digest that holds for this engine, whatever version of it wrote the files."""
    if isinstance(files, Path):
        files = [files]
    con.execute(f"DROP VIEW IF EXISTS {name}")
    if not files:
        con.execute(f"CREATE TEMP VIEW {name} AS {EMPTY_SNAPSHOT}")
        return name
    paths = "[" + ", ".join(sql_string(str(f)) for f in files) + "]"
    source = f"read_parquet({paths}, hive_partitioning = false)"
    kinds = dict(
        con.execute(
            f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {source})"
        ).fetchall()
    )
    # Every file must carry this engine's digest spec for the digests to be trusted.
    specs = con.execute(
        f"SELECT DISTINCT decode(value) FROM parquet_kv_metadata({paths}) WHERE decode(key) = ?",
        [DIGEST_KEY],
    ).fetchall()
    (spec_files,) = con.execute(  # type: ignore[misc]
        f"SELECT count(DISTINCT file_name) FROM parquet_kv_metadata({paths}) WHERE decode(key) = ?",
        [DIGEST_KEY],
    ).fetchone()
    trusted = specs == [(DIGEST_SPEC,)] and spec_files == len(files)
    replace = []
    # Snapshots written before attributes were stored as entries hold a MAP.
    if kinds.get("attributes", "").startswith("MAP"):
        replace.append("map_entries(attributes) AS attributes")
    columns = "*"
    if "content_digest" not in kinds:
        columns = f"*, {CONTENT_DIGEST} AS content_digest"
    elif not trusted:
        replace.append(f"{CONTENT_DIGEST} AS content_digest")
    if replace:
        columns = columns.replace("*", f"* REPLACE ({', '.join(replace)})", 1)
    keep = f" WHERE {where}" if where else ""
    con.execute(f"CREATE TEMP VIEW {name} AS SELECT {columns} FROM {source}{keep}")
    return name


def build_keyed(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    first_pass: str,
    current: str,
    buckets: int,
    existence: bool,
) -> str:
    """Table KEYED: each row's catalog key (Elastic Path matches by id, then
    external_ref, and keeps how), its key's first row, its bucket and, with `existence`
    (the create and update modes' rules read it), whether the catalog has it.

    Reads the first pass's keys and fingerprints (validate.first_pass_sql) and only the
    key columns of the current products, so it is cheap to redo when another import
    moved the catalog meanwhile.
    """
    if projection.match_by_reference:
        joins = f"""
            LEFT JOIN (SELECT id, any_value(sku) AS sku FROM {current} GROUP BY id) by_id
                   ON by_id.id = t.ep_id
            LEFT JOIN (SELECT external_ref, any_value(sku) AS sku FROM {current}
                       WHERE external_ref IS NOT NULL GROUP BY external_ref) by_ref
                   ON by_ref.external_ref = t.external_ref
        """
        match = "coalesce(by_id.sku, by_ref.sku)"
        # How each row matched, for the rules on ids (validate.py). Other presets leave
        # these columns out: four empty columns are 40% of KEYED (42 MB at 3M rows).
        by_reference = (
            f"{match} AS key_match, by_id.sku IS NOT NULL AS id_matched, t.given_sku, t.ep_id, "
        )
    else:
        joins, match, by_reference = "", "NULL::VARCHAR", ""
    # Probing every key against the whole catalog: 0.4 s of 2.9 at 3M rows, for nothing
    # in the other modes.
    exists = (
        f"coalesce(m.sku IN (SELECT sku FROM {current}), false) AS exists_in_catalog,"
        if existence
        else ""
    )
    con.execute(f"DROP TABLE IF EXISTS {KEYED}")
    con.execute(f"""
        CREATE TEMP TABLE {KEYED} AS
        WITH matched AS NOT MATERIALIZED (
            SELECT t.rn, coalesce({match}, t.sku) AS sku, {by_reference} t.fp
            FROM {first_pass} t {joins}
        )
        -- Keys held by several rows, with their first row: an aggregate, not a window
        -- over every row (0.84 CPU-s at a million rows, of 1.8 for this statement).
        , shared AS (
            SELECT sku, min(rn) AS first_rn FROM matched
            WHERE sku IS NOT NULL GROUP BY sku HAVING count(*) > 1
        )
        SELECT m.*, {exists}
               coalesce(s.first_rn, m.rn) AS first_rn,
               {bucket_of("m.sku", buckets)} AS bucket
        FROM matched m LEFT JOIN shared s ON s.sku = m.sku
    """)
    return KEYED


# The canonical field each raw text column of a projection fills.
FIELD_OF_RAW = {raw: field for field, raw in RAW_OF.items()}


@dataclass(frozen=True)
class Verdicts:
    """What the first pass decided, for the merge: each row's key, and the rejected rows."""

    keyed: str
    row_errors: str

    def accepted(self) -> str:
        """Rows with no error, and their keys: unique, since every later duplicate is
        rejected."""
        return (
            f"SELECT rn, sku FROM {self.keyed} WHERE rn NOT IN (SELECT rn FROM {self.row_errors})"
        )


def accepted_by_rn(verdicts: Verdicts, typed: str) -> str:
    """The accepted rows of `typed`, picked by record number (works for every preset)."""
    return f"""
        SELECT t.* REPLACE (a.sku AS sku) FROM {typed} t JOIN ({verdicts.accepted()}) a
            ON a.rn = t.rn
    """


def accepted_by_key(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    verdicts: Verdicts,
    raw: str,
    typed_unnumbered: str,
) -> str:
    """The accepted rows of `typed_unnumbered` (the file read in parallel, rows without
    numbers), for presets whose key is the row's own sku.

    A key held by one row names that row, so its key says whether it is accepted. Of a
    key held by several rows only the first occurrence can be accepted; the second pass
    recognises it by a hash of its text fields (KEYED's fp, from the first pass) when no
    other row with that key has the same hash, which is an exact test: the hash picks
    exactly one row. Rows it cannot tell apart are fetched by number into
    `first_of_duplicates` (one ordered scan, only when the file has such a row; the
    numbers are matched right after the scan, so only those rows are ever projected and
    typed).

    The second pass is filtered by the exceptions (`key_rules`: rejected rows and
    shared keys, usually a percent of the file), never joined with every accepted key:
    a hash table of ten million keys would compete with the merge's own for memory.
    A rule with fp NULL drops every row of its key; one with a hash keeps only the row
    with that hash.
    """
    keyed, row_errors = verdicts.keyed, verdicts.row_errors
    # Working tables of this function alone (nothing else reads them).
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE shared_keys AS
        SELECT DISTINCT sku FROM {keyed} WHERE sku IS NOT NULL AND rn <> first_rn
    """)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE first_occurrences AS
        WITH hashes AS (
            SELECT sku, fp, count(*) AS rows_with_fp FROM {keyed}
            WHERE sku IN (SELECT sku FROM shared_keys) GROUP BY sku, fp
        )
        SELECT k.rn, k.sku, k.fp, h.rows_with_fp = 1 AS by_fingerprint
        FROM {keyed} k JOIN hashes h ON h.sku = k.sku AND h.fp = k.fp
        WHERE k.rn IN (SELECT rn FROM ({verdicts.accepted()}))
          AND k.sku IN (SELECT sku FROM shared_keys)
    """)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE key_rules AS
        SELECT sku, NULL::UBIGINT AS fp FROM {keyed}
        WHERE sku IS NOT NULL AND rn IN (SELECT rn FROM {row_errors})
          AND sku NOT IN (SELECT sku FROM shared_keys)
        UNION ALL
        SELECT s.sku, f.fp FROM shared_keys s
        LEFT JOIN (SELECT sku, fp FROM first_occurrences WHERE by_fingerprint) f
               ON f.sku = s.sku
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE wanted_rows AS
        SELECT rn FROM first_occurrences WHERE NOT by_fingerprint
    """)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE first_of_duplicates AS FROM {typed_unnumbered} WHERE false"
    )
    if con.execute("SELECT count(*) FROM wanted_rows").fetchone()[0]:  # type: ignore[index]
        con.execute(
            "CREATE OR REPLACE TEMP VIEW raw_wanted AS "
            f"SELECT * FROM {raw} WHERE rn IN (SELECT rn FROM wanted_rows)"
        )
        con.execute("CREATE OR REPLACE TEMP VIEW staged_wanted AS " + projection.over("raw_wanted"))
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW typed_wanted AS {typed_sql(projection, 'staged_wanted')}"
        )
        with forced_join_order(con):
            con.execute("INSERT INTO first_of_duplicates FROM typed_wanted")
    return f"""
        SELECT t.* FROM {typed_unnumbered} t LEFT JOIN key_rules r ON r.sku = t.sku
        WHERE t.sku IS NOT NULL AND (r.sku IS NULL OR r.fp = {fingerprint("t")})
        UNION ALL
        SELECT * FROM first_of_duplicates
    """


# The columns of the accepted rows that merge() reads: the product's fields. The rest of
# a typed row (the *_raw texts the fields were parsed from, rn) is not written when the
# accepted rows are staged by bucket: at 3M rows the split took 20-22 s instead of
# 30-38 s (the two taken in turns, 2026-11-30).
INCOMING_COLUMNS = ", ".join(PRODUCT_FIELDS)


def _keys(entries: str) -> str:
    return f"list_transform({entries}, lambda e: e.key)"


def _merged_attributes() -> str:
    """The product's attribute entries whose keys the file does not bring, then the
    file's (a key-by-key merge, the file winning)."""
    return (
        "list_concat(list_filter(c_attributes, lambda kept: NOT list_contains("
        f"{_keys('in_attributes')}, kept.key)), in_attributes)"
    )


@contextlib.contextmanager
def forced_join_order(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Joins in the order written, the right-hand side the build side.

    The optimizer guesses that a CSV scan holds a few dozen rows and would build its
    hash tables on the file (whole rows, in memory) instead of on the narrow key lists.
    """
    con.execute("SET disabled_optimizers = 'join_order,build_side_probe_side'")
    try:
        yield
    finally:
        con.execute("RESET disabled_optimizers")


def merge(
    con: duckdb.DuckDBPyConnection,
    present_columns: Iterable[str],
    mode: Mode,
    import_id: str,
    target: Path,
    parquet_options: str,
    incoming_sql: str,
    current: str,
    verdicts: Verdicts,
    now: datetime | None = None,
) -> MergeCounts:
    """Write the next snapshot to `target` from `incoming_sql` (the accepted rows, typed,
    with their resolved key), and count. `present_columns`: the projection's present
    columns (the fields the file brings; the others are kept from the product).

    One streaming statement: the second pass over the file (full rows this time) is
    joined with the current snapshot and written straight to Parquet, never held as a
    table. Created/updated rows carry this import's id and timestamp, so the counts are
    read back from the two bookkeeping columns of what was written.
    """
    fields = [f for f in PRODUCT_FIELDS if f not in ("sku", "attributes")]
    present = {FIELD_OF_RAW.get(raw, raw) for raw in present_columns}
    # A merged row is compared with its product through the digest of their content
    # fields, the product's kept in the snapshot, so the hash table on the current
    # snapshot holds a narrow row, not whole products (their descriptions above all):
    # that table must fit the memory limit. A false "unchanged" needs a 64-bit
    # collision, and would still write the file's values.
    kept_from_current = [f for f in CONTENT_FIELDS if f not in present]
    slim = ["sku", "id", "created_at", "updated_at", "import_id", "attributes"]
    slim += [*kept_from_current, *sorted(DEFAULTED_FIELDS)]
    merged_fields = []
    for f in fields:
        if f in DEFAULTED_FIELDS:
            merged_fields.append(f"coalesce(i.{f}, c.{f}) AS {f}")
        elif f in present:
            merged_fields.append(f"i.{f} AS {f}")
        else:
            merged_fields.append(f"c.{f} AS {f}")
    # Attributes are entries (models.product.ATTRIBUTE_ENTRIES) on both sides. The file's
    # merge into the product's key by key, the file winning, so they leave it unchanged
    # when they equal its entries (the usual case: the same columns as last time), when
    # the file brings none, and otherwise only if merging changes nothing. Nested CASEs
    # run the costly tests only on the rows the cheap ones did not settle.
    same = " AND ".join(
        ["content_digest = c_digest"]
        + [f"{f} IS NOT DISTINCT FROM c_{f}" for f in sorted(DEFAULTED_FIELDS)]
        + [
            "CASE WHEN in_attributes = c_attributes THEN true "
            "WHEN len(in_attributes) = 0 THEN true "
            "WHEN c_attributes IS NULL OR len(c_attributes) = 0 THEN false "
            f"WHEN {_keys('in_attributes')} = {_keys('c_attributes')} THEN false "
            f"ELSE list_sort({_merged_attributes()}) = list_sort(c_attributes) END"
        ]
    )
    if now is None:
        now = con.execute("SELECT now()::TIMESTAMP").fetchone()[0]  # type: ignore[index]
    stamp = f"TIMESTAMP {sql_string(now.isoformat(sep=' '))}"
    this_import = sql_string(import_id)
    # The products the file leaves as they are, listed before the merge so that its
    # statement holds one large hash table (the current products), not two.
    accepted_rows = verdicts.accepted()
    untouched = f"SELECT sku FROM {current} c ANTI JOIN ({accepted_rows}) a ON a.sku = c.sku"
    if mode is Mode.replace:
        # Products the file does not mention go, but never one whose row was rejected.
        untouched += (
            f" SEMI JOIN (SELECT sku FROM {verdicts.keyed} WHERE sku IS NOT NULL) k"
            " ON k.sku = c.sku"
        )
    con.execute(f"CREATE OR REPLACE TEMP TABLE {UNTOUCHED} AS {untouched}")
    (kept,) = con.execute(f"SELECT count(*) FROM {UNTOUCHED}").fetchone()  # type: ignore[misc]
    columns = ", ".join(SNAPSHOT_COLUMNS)
    with forced_join_order(con):
        (written,) = con.execute(f"""
        COPY (
            WITH incoming AS ({incoming_sql}),
            current_slim AS (
                SELECT {", ".join(slim)}, content_digest AS digest FROM {current}
            ),
            joined AS (
                SELECT i.sku, c.sku AS c_sku, c.id AS c_id, c.created_at AS c_created,
                       c.updated_at AS c_updated, c.import_id AS c_import,
                       c.digest AS c_digest, c.attributes AS c_attributes,
                       {", ".join(f"c.{f} AS c_{f}" for f in sorted(DEFAULTED_FIELDS))},
                       {", ".join(merged_fields)}, i.attributes AS in_attributes
                FROM incoming i LEFT JOIN current_slim c ON c.sku = i.sku
            ),
            digested AS (SELECT *, {CONTENT_DIGEST} AS content_digest FROM joined),
            classified AS (
                SELECT *, CASE WHEN c_sku IS NULL THEN 'created'
                               WHEN {same} THEN 'unchanged'
                               ELSE 'updated' END AS change
                FROM digested
            )
            SELECT {columns} FROM (
                SELECT *,
                       CASE WHEN change = 'unchanged' THEN c_attributes
                            WHEN c_attributes IS NULL OR len(c_attributes) = 0 THEN in_attributes
                            WHEN len(in_attributes) = 0 THEN c_attributes
                            WHEN {_keys("in_attributes")} = {_keys("c_attributes")}
                                 THEN in_attributes
                            ELSE {_merged_attributes()}
                       END AS attributes,
                       coalesce(c_id, gen_random_uuid()::VARCHAR) AS id,
                       coalesce(c_created, {stamp}) AS created_at,
                       CASE WHEN change = 'unchanged' THEN c_updated ELSE {stamp} END
                           AS updated_at,
                       CASE WHEN change = 'unchanged' THEN c_import ELSE {this_import} END
                           AS import_id
                FROM classified
            )
            UNION ALL
            SELECT {columns} FROM {current} c SEMI JOIN {UNTOUCHED} u ON u.sku = c.sku
        ) TO {sql_string(str(target))} (
            {parquet_options}, KV_METADATA {{{DIGEST_KEY}: {sql_string(DIGEST_SPEC)}}}
        )
        """).fetchone()  # type: ignore[misc]
    # Only rows this run created or changed carry its import id with its timestamp
    # (an import id is applied once, and the timestamp is this run's own).
    created, touched = con.execute(f"""
        SELECT count(*) FILTER (created_at = {stamp}),
               count(*) FILTER (updated_at = {stamp})
        FROM read_parquet({sql_string(str(target))}) WHERE import_id = {this_import}
    """).fetchone()  # type: ignore[misc]
    (accepted,) = con.execute(f"SELECT count(*) FROM ({accepted_rows})").fetchone()  # type: ignore[misc]
    if written - kept != accepted:
        # The second pass must yield exactly the rows the first accepted: anything else
        # is a bug, and committing it would corrupt the catalog.
        raise ImportFailure(
            f"internal check failed: the merge wrote {written - kept:,} incoming rows where "
            f"{accepted:,} were accepted; nothing was committed",
            reason="InternalError",
        )
    deleted = 0
    if mode is Mode.replace:
        (before,) = con.execute(f"SELECT count(*) FROM {current}").fetchone()  # type: ignore[misc]
        deleted = before + created - written
    return MergeCounts(created, touched - created, accepted - touched, deleted, written)
