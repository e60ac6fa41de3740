"""Merging accepted rows into the current snapshot: counts and the next snapshot.

One pass of joins in DuckDB (a full snapshot rewrite, the shape measured fastest in
DUCKDB-NOTES.md). Semantics:
- a column the file does not have leaves that field of existing products untouched;
  a column it has but with an empty cell clears the field (status and commodity_type,
  which cannot be empty, keep their value or take the preset's default);
- attributes merge key by key, the file's values winning;
- a product whose merged fields equal its current ones counts as unchanged;
- replace mode deletes products the file does not mention, but never one whose row
  was rejected: a bad row must not cost the catalog a product.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from productimport.engine.options import Mode
from productimport.engine.parse import sql_string
from productimport.engine.presets import Projection
from productimport.models.product import PRODUCT_FIELDS, SNAPSHOT_COLUMNS

EMPTY_SNAPSHOT = (
    "SELECT "
    + ", ".join(f"NULL::{kind} AS {name}" for name, kind in SNAPSHOT_COLUMNS.items())
    + " WHERE false"
)

DEFAULTED = {"status", "commodity_type"}


@dataclass
class MergeCounts:
    created: int
    updated: int
    unchanged: int
    deleted: int
    products: int


def load_current(con: duckdb.DuckDBPyConnection, snapshot: Path | None) -> None:
    con.execute("DROP VIEW IF EXISTS cur")
    if snapshot is None:
        con.execute(f"CREATE TEMP VIEW cur AS {EMPTY_SNAPSHOT}")
    else:
        con.execute(
            f"CREATE TEMP VIEW cur AS SELECT * FROM read_parquet({sql_string(str(snapshot))})"
        )


def build_keyed(con: duckdb.DuckDBPyConnection, projection: Projection) -> None:
    """Resolve each row's catalog key (Elastic Path matches by id, then external_ref)."""
    if projection.match_by_reference:
        joins = """
            LEFT JOIN (SELECT id, any_value(sku) AS sku FROM cur GROUP BY id) by_id
                   ON by_id.id = t.ep_id
            LEFT JOIN (SELECT external_ref, any_value(sku) AS sku FROM cur
                       WHERE external_ref IS NOT NULL GROUP BY external_ref) by_ref
                   ON by_ref.external_ref = t.external_ref
        """
        match = "coalesce(by_id.sku, by_ref.sku)"
        id_matched = "by_id.sku IS NOT NULL"
    else:
        joins, match, id_matched = "", "NULL::VARCHAR", "false"
    con.execute("DROP TABLE IF EXISTS keyed")
    con.execute(f"""
        CREATE TEMP TABLE keyed AS
        WITH matched AS (
            SELECT t.* REPLACE (coalesce({match}, t.sku) AS sku),
                   {match} AS key_match, {id_matched} AS id_matched
            FROM typed t {joins}
        )
        SELECT m.*, (c.sku IS NOT NULL) AS exists_in_catalog,
               min(m.rn) OVER (PARTITION BY m.sku) AS first_rn
        FROM matched m LEFT JOIN (SELECT DISTINCT sku FROM cur) c ON c.sku = m.sku
    """)


def merge(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    mode: Mode,
    import_id: str,
    target: Path,
) -> MergeCounts:
    """Write the next snapshot to `target` from `keyed` minus `row_errors`, and count."""
    fields = [f for f in PRODUCT_FIELDS if f not in ("sku", "attributes")]
    present = {_field_of(raw) for raw in projection.present}
    merged_fields = []
    for f in fields:
        if f in DEFAULTED:
            merged_fields.append(f"coalesce(i.{f}, c.{f}) AS {f}")
        elif f in present:
            merged_fields.append(f"i.{f} AS {f}")
        else:
            merged_fields.append(f"c.{f} AS {f}")
    same = " AND ".join(
        [f"m.{f} IS NOT DISTINCT FROM c.{f}" for f in fields]
        + [
            "list_sort(map_entries(m.attributes)) IS NOT DISTINCT FROM "
            "list_sort(map_entries(c.attributes))"
        ]
    )
    con.execute("DROP TABLE IF EXISTS merged")
    con.execute(f"""
        CREATE TEMP TABLE merged AS
        WITH incoming AS (
            SELECT k.* FROM keyed k ANTI JOIN (SELECT DISTINCT rn FROM row_errors) e
                ON e.rn = k.rn
        ),
        joined AS (
            SELECT coalesce(c.id, gen_random_uuid()::VARCHAR) AS id, i.sku,
                   {", ".join(merged_fields)},
                   map_concat(coalesce(c.attributes, MAP {{}}::MAP(VARCHAR, VARCHAR)),
                              i.attributes) AS attributes,
                   c.sku IS NULL AS is_new, c.created_at AS old_created,
                   c.updated_at AS old_updated, c.import_id AS old_import
            FROM incoming i LEFT JOIN cur c ON c.sku = i.sku
        )
        SELECT m.*, CASE WHEN m.is_new THEN 'created' WHEN {same} THEN 'unchanged'
                         ELSE 'updated' END AS change
        FROM joined m LEFT JOIN cur c ON c.sku = m.sku
    """)
    protected = "SELECT sku FROM merged UNION SELECT sku FROM keyed WHERE sku IS NOT NULL"
    kept = "SELECT * FROM cur WHERE sku NOT IN (SELECT sku FROM merged)"
    if mode is Mode.replace:
        kept = (
            "SELECT * FROM cur WHERE sku IN (SELECT sku FROM keyed WHERE sku IS NOT NULL) "
            "AND sku NOT IN (SELECT sku FROM merged)"
        )
    columns = ", ".join(SNAPSHOT_COLUMNS)
    now = "now()::TIMESTAMP"
    con.execute(f"""
        COPY (
            SELECT {columns} FROM (
                SELECT * EXCLUDE (is_new, old_created, old_updated, old_import, change),
                       coalesce(old_created, {now}) AS created_at,
                       CASE WHEN change = 'unchanged' THEN old_updated ELSE {now} END
                           AS updated_at,
                       CASE WHEN change = 'unchanged' THEN old_import
                            ELSE {sql_string(import_id)} END AS import_id
                FROM merged
            )
            UNION ALL
            SELECT {columns} FROM ({kept})
        ) TO {sql_string(str(target))}
        (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 122880)
    """)
    created, updated, unchanged = con.execute(
        "SELECT count(*) FILTER (change = 'created'), count(*) FILTER (change = 'updated'), "
        "count(*) FILTER (change = 'unchanged') FROM merged"
    ).fetchone()  # type: ignore[misc]
    deleted = 0
    if mode is Mode.replace:
        deleted = con.execute(
            f"SELECT count(*) FROM cur WHERE sku NOT IN ({protected})"
        ).fetchone()[0]  # type: ignore[index]
    products = con.execute(
        f"SELECT count(*) FROM read_parquet({sql_string(str(target))})"
    ).fetchone()[0]  # type: ignore[index]
    return MergeCounts(created, updated, unchanged, deleted, products)


def _field_of(raw: str) -> str:
    return {
        "status_raw": "status",
        "commodity_raw": "commodity_type",
        "price_raw": "price",
        "currency_raw": "currency",
        "tags_raw": "tags",
    }.get(raw, raw)
