"""Catalogs written in the layout before Delta Lake (CURRENT, manifests, one snapshot
per version) are taken over on first use, history and all, and nothing is lost."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import duckdb

from productimport.engine.legacy import legacy_history
from productimport.engine.merge import DIGEST_KEY, DIGEST_SPEC


def write_legacy_catalog(engine) -> None:
    """Versions 1 (an import), 2 (an import) and 3 (a rollback to 1), as the former engine
    left them: snapshots with attributes as a MAP and unsigned content digests."""
    root = engine.store.root / "default" / "main"
    (root / "snapshots").mkdir(parents=True)
    (root / "versions").mkdir()
    product = (
        "SELECT 'id-' || sku AS id, sku, name, NULL::VARCHAR AS slug, NULL::VARCHAR AS "
        "description, 'draft' AS status, 'physical' AS commodity_type, price::DECIMAL(18,4) "
        "AS price, NULL::VARCHAR AS currency, NULL::VARCHAR AS upc_ean, NULL::VARCHAR AS mpn, "
        "NULL::VARCHAR AS external_ref, []::VARCHAR[] AS tags, NULL::VARCHAR AS main_image, "
        "NULL::VARCHAR AS parent_sku, MAP {{'brand': brand}} AS attributes, "
        "TIMESTAMP '2026-01-01' AS created_at, TIMESTAMP '2026-01-01' AS updated_at, "
        "'old-import-' || v AS import_id, 0::UBIGINT AS content_digest "
        "FROM (VALUES {rows}) t(v, sku, name, price, brand)"
    )
    versions = {
        1: "(1, 'A', 'Alpha', 1, 'Acme'), (1, 'B', 'Beta', 2, 'Bolt')",
        2: "(2, 'A', 'Alpha', 1, 'Acme'), (2, 'B', 'Beta v2', 3, 'Bolt'), "
        "(2, 'C', 'Gamma', 4, 'Cog')",
    }
    for number, values in versions.items():
        duckdb.execute(
            f"COPY ({product.format(rows=values)}) TO "
            f"'{root}/snapshots/{number:08d}-x.parquet' (FORMAT parquet)"
        )
    manifests = [
        (1, None, 1, "import-one", 2, None),
        (2, 1, 2, "import-two", 3, None),
        (3, 2, 1, None, 2, 1),
    ]
    for number, parent, snapshot, import_id, products, rollback_of in manifests:
        doc = {
            "version": number,
            "key": f"versions/{number:08d}-x.json",
            "parent": f"versions/{parent:08d}-x.json" if parent else None,
            "snapshot": f"snapshots/{snapshot:08d}-x.parquet",
            "products": products,
            "importId": import_id,
            "counts": {"rows": products, "created": products} if import_id else None,
            "rollbackOf": rollback_of,
            "createdAt": datetime(2026, 1, number, tzinfo=UTC).isoformat(),
        }
        (root / doc["key"]).write_text(json.dumps(doc))
    pointer = {"version": 3, "manifest": "versions/00000003-x.json"}
    (root / "CURRENT").write_text(json.dumps(pointer))


def test_a_former_catalog_is_migrated_with_its_history_on_first_use(engine):
    write_legacy_catalog(engine)
    catalog = engine.catalog()

    # Reading is first use: the products are version 3's (the rollback to version 1).
    products = engine.products()
    assert set(products) == {"A", "B"}
    assert products["B"]["name"] == "Beta"
    assert products["A"]["attributes"] == {"brand": "Acme"}  # the MAP, read as entries
    assert products["A"]["id"] == "id-A"  # ids and timestamps kept as they were

    history = catalog.history()
    assert [(v.version, v.importId, v.rollbackOf) for v in history] == [
        (3, None, 1),
        (2, "import-two", None),
        (1, "import-one", None),
    ]
    assert history[-1].createdAt == datetime(2026, 1, 1, tzinfo=UTC)
    # Earlier versions read as they were.
    older, _total = engine_products_at(engine, 2)
    assert {p["sku"]: p["name"] for p in older} == {"A": "Alpha", "B": "Beta v2", "C": "Gamma"}
    # The former objects are still there: nothing was deleted.
    assert len(legacy_history(catalog)) == 3
    # The migrated files carry this engine's digests, so the next import trusts them.
    table = engine.store.root / "default" / "main" / "products"
    for data_file in catalog.head().files:
        spec = duckdb.execute(
            "SELECT decode(value) FROM parquet_kv_metadata(?) WHERE decode(key) = ?",
            [str(table / data_file.path), DIGEST_KEY],
        ).fetchall()
        assert spec == [(DIGEST_SPEC,)], data_file


def test_the_cli_migrates_on_demand_and_says_what_is_left(engine):
    write_legacy_catalog(engine)
    store = ["--catalog", "main", "--store", str(engine.store.root)]
    report, code = engine.cli_json("catalog", "migrate", *store)
    assert code == 0
    assert (report["version"], report["products"], report["formerVersions"]) == (3, 2, 3)
    assert report["table"].endswith("default/main/products")
    again, _ = engine.cli_json("catalog", "migrate", *store)
    assert again["version"] == 3  # repeating it changes nothing


def test_a_migrated_catalog_imports_idempotently_and_compares_content(engine):
    write_legacy_catalog(engine)
    # Import ids of the former layout are still known: not applied twice.
    again = engine.run(engine.write("a.csv", "sku,name\nZ,Zed\n"), import_id="import-two")
    assert again.catalogVersion == 2 and again.counts.created == 3

    # The former digests (zeros, of another hash) are not trusted: the same content is
    # unchanged, other content updated.
    same = engine.run(engine.write("same.csv", "sku,name,price,brand\nA,Alpha,1,Acme\n"))
    assert (same.counts.unchanged, same.counts.updated, same.catalogVersion) == (1, 0, 3)
    changed = engine.run(engine.write("b.csv", "sku,name,brand\nA,Alpha,Apex\nD,Delta,\n"))
    assert (changed.counts.updated, changed.counts.created, changed.catalogVersion) == (1, 1, 4)
    assert engine.products()["A"]["attributes"] == {"brand": "Apex"}
    assert engine.catalog().rollback(2).version == 5
    assert set(engine.products()) == {"A", "B", "C"}


def engine_products_at(engine, version: int):
    from productimport.engine.products import list_products

    return list_products(engine.catalog(), version=version, limit=100)
