"""The SQL the presets generate.

The native preset's is pinned: every benchmark runs it, so a change to it (and to its
cost) must be deliberate: update NATIVE_SQL on purpose, after measuring. Every preset is
also run by DuckDB over the rows of the real export files.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from productimport.engine.options import Preset
from productimport.engine.presets import (
    ELASTICPATH,
    NATIVE,
    SHOPIFY,
    TEXT_FIELDS,
    WOOCOMMERCE,
    From,
    attribute_key,
    normalize_header,
    project,
)

TYPICAL_HEADERS = ["sku", "name", "description", "price", "currency", "status", "tags"]
TYPICAL_HEADERS += ["Color", "Size"]  # no field takes them: attributes

NATIVE_SQL = (
    "SELECT rn, CASE WHEN c0 < '!' OR c0 >= '\u0080' OR suffix(c0, ' ') OR c0[-1] >= "
    "'\u0080' THEN nullif(trim(c0), '') ELSE nullif(c0, '') END AS sku, CASE WHEN c1 < "
    "'!' OR c1 >= '\u0080' OR suffix(c1, ' ') OR c1[-1] >= '\u0080' THEN "
    "nullif(trim(c1), '') ELSE nullif(c1, '') END AS name, NULL AS slug, CASE WHEN c2 < "
    "'!' OR c2 >= '\u0080' OR suffix(c2, ' ') OR c2[-1] >= '\u0080' THEN "
    "nullif(trim(c2), '') ELSE nullif(c2, '') END AS description, CASE WHEN c5 < '!' OR "
    "c5 >= '\u0080' OR suffix(c5, ' ') OR c5[-1] >= '\u0080' THEN nullif(trim(c5), '') "
    "ELSE nullif(c5, '') END AS status_raw, NULL AS commodity_raw, CASE WHEN c3 < '!' OR "
    "c3 >= '\u0080' OR suffix(c3, ' ') OR c3[-1] >= '\u0080' THEN nullif(trim(c3), '') "
    "ELSE nullif(c3, '') END AS price_raw, CASE WHEN c4 < '!' OR c4 >= '\u0080' OR "
    "suffix(c4, ' ') OR c4[-1] >= '\u0080' THEN nullif(trim(c4), '') ELSE nullif(c4, '') "
    "END AS currency_raw, NULL AS upc_ean, NULL AS mpn, NULL AS external_ref, CASE WHEN "
    "c6 < '!' OR c6 >= '\u0080' OR suffix(c6, ' ') OR c6[-1] >= '\u0080' THEN "
    "nullif(trim(c6), '') ELSE nullif(c6, '') END AS tags_raw, NULL AS main_image, NULL "
    "AS parent_sku, NULL AS ep_id, NULL AS given_sku, CASE WHEN (c7 >= '!' AND c7 < "
    "'\u007f') AND (c8 >= '!' AND c8 < '\u007f') THEN [{'key': 'Color', 'value': c7}, "
    "{'key': 'Size', 'value': c8}] ELSE list_filter([{'key': 'Color', 'value': c7}, "
    "{'key': 'Size', 'value': c8}], lambda e: e.value IS NOT NULL AND ((e.value >= '!' "
    "AND e.value < '\u007f') OR trim(e.value) <> '')) END AS attributes FROM raw"
)


def test_native_sql_is_pinned():
    projection = project(Preset.native, TYPICAL_HEADERS, {})
    assert projection.sql == NATIVE_SQL
    assert projection.over("raw_unnumbered") == (
        NATIVE_SQL.removesuffix(" FROM raw") + " FROM raw_unnumbered"
    )
    assert projection.streamable and not projection.match_by_reference
    assert projection.field_columns == {
        "sku": 0,
        "name": 1,
        "description": 2,
        "price_raw": 3,
        "currency_raw": 4,
        "status_raw": 5,
        "tags_raw": 6,
    }
    assert projection.present == set(projection.field_columns)
    assert projection.sources == {
        field: TYPICAL_HEADERS[i] for field, i in projection.field_columns.items()
    }
    assert projection.required == ["sku", "name"]
    assert projection.defaults == {"status": "'draft'", "commodity_type": "'physical'"}


def test_native_takes_the_first_candidate_header_the_file_has():
    # `name` before `title` whatever the column order; the other one stays an attribute.
    projection = project(Preset.native, ["Title", "sku", "NAME", "EAN", "barcode"], {})
    assert projection.field_columns == {"name": 2, "sku": 1, "upc_ean": 3}
    assert "'key': 'Title'" in projection.sql and "'key': 'barcode'" in projection.sql
    assert "'key': 'NAME'" not in projection.sql and "'key': 'EAN'" not in projection.sql


def test_a_mapped_field_leaves_its_candidate_column_an_attribute():
    projection = project(Preset.native, ["sku", "name", "Label"], {"Label": "name"})
    assert projection.field_columns == {"sku": 0, "name": 2}
    assert projection.sources["name"] == "Label"
    assert "{'key': 'name', 'value': c1}" in projection.sql


def test_only_streamable_projections_read_another_table():
    shopify = project(Preset.shopify, ["Handle", "Title", "Variant SKU"], {})
    woocommerce = project(Preset.woocommerce, ["SKU", "Name"], {})
    for projection in (shopify, woocommerce):
        assert not projection.streamable
        with pytest.raises(ValueError, match="streamable"):
            projection.over("raw_unnumbered")


@pytest.mark.parametrize("layout", [NATIVE, ELASTICPATH, WOOCOMMERCE, SHOPIFY])
def test_layout_headers_are_written_as_they_match(layout):
    """Layouts name headers normalized (what Columns looks up), and only canonical fields."""
    assert set(layout.fields) <= set(TEXT_FIELDS)
    for source in layout.fields.values():
        reader: From | None = source
        while reader is not None:
            assert all(normalize_header(h) == h for h in reader.headers)
            reader = reader.otherwise


REAL_FILES = [
    # (preset, path under shared/data, mapping, rows staged)
    ("elasticpath", "elasticpath-pcm/pim_product_import_example.csv", {}, 5),
    # 17 rows: one only adds an image to its Handle group and is folded into it.
    ("shopify", "shopify-product-template/kcohen1997/product_template.csv", {}, 16),
    ("shopify", "shopify-product-template/umsu2/product_template.csv", {}, 3),
    ("woocommerce", "woocommerce-sample-data/sample.csv", {}, 7),
    ("woocommerce", "woocommerce-sample-data/sample_products.csv", {}, 25),
    ("native", "magento2-sample-data/products.csv", {}, 1994),
    ("native", "akeneo-pim-docs/product.csv", {}, 15),
    (
        "native",
        "prestashop-csv-import/products_import.csv",
        {"Reference #": "sku", "Name *": "name"},
        7,
    ),
]


def load_raw(path: Path) -> tuple[list[str], duckdb.DuckDBPyConnection]:
    """The file's headers, and table `raw(rn, c0..cN)` of its rows, all text."""
    first = path.read_text(encoding="utf-8-sig").splitlines()[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    con = duckdb.connect()
    header = con.execute(
        "SELECT * FROM read_csv(?, header=false, all_varchar=true, delim=?, quote='\"', "
        "escape='\"') LIMIT 1",
        [str(path), delimiter],
    ).fetchone()
    headers = [h.removeprefix("\ufeff") for h in header]
    con.execute(
        "CREATE TABLE raw AS SELECT row_number() OVER () AS rn, * FROM read_csv(?, "
        "header=false, skip=1, all_varchar=true, delim=?, quote='\"', escape='\"', names=?)",
        [str(path), delimiter, [f"c{i}" for i in range(len(headers))]],
    )
    return headers, con


@pytest.mark.parametrize(
    ("preset", "relative", "mapping", "expected"), REAL_FILES, ids=[r[1] for r in REAL_FILES]
)
def test_preset_sql_on_real_file(shared_data, preset, relative, mapping, expected):
    headers, con = load_raw(shared_data / relative)
    projection = project(Preset(preset), headers, mapping)
    assert projection.streamable == (preset in ("native", "elasticpath"))
    con.execute(f"CREATE TABLE staged AS {projection.sql}")
    columns = [d[0] for d in con.execute("SELECT * FROM staged LIMIT 0").description]
    assert columns == ["rn", *TEXT_FIELDS, "attributes"]
    counts = con.execute("SELECT count(*), count(DISTINCT sku), count(name) FROM staged")
    assert counts.fetchone() == (expected, expected, expected)
    if projection.streamable:
        con.execute("CREATE VIEW raw_other AS SELECT * FROM raw")
        assert con.execute(f"{projection.over('raw_other')} ORDER BY rn").fetchall() == (
            con.execute("SELECT * FROM staged ORDER BY rn").fetchall()
        )

    # Nothing is lost: a non-blank cell of a column no field reads is an attribute of its
    # row, under its header; the columns streamable fields take are not attributes.
    keys = [attribute_key(h) for h in headers]
    staged = {
        rn: {e["key"]: e["value"] for e in entries}
        for rn, entries in con.execute("SELECT rn, attributes FROM staged").fetchall()
    }
    read = set(projection.sources.values()) | set(mapping)
    raw_rows = con.execute("SELECT * FROM raw").fetchall()
    for rn, *cells in raw_rows:
        if rn not in staged:
            continue  # a Shopify row folded into its group
        for i, cell in enumerate(cells):
            if headers[i] in read or keys.count(keys[i]) > 1 or not (cell or "").strip():
                continue
            assert staged[rn][keys[i]].strip() == cell.strip(), (rn, headers[i])
        for i in projection.field_columns.values():
            assert keys[i] not in staged[rn]
    if preset == "shopify":
        assert len(raw_rows) - len(staged) == (1 if "kcohen1997" in relative else 0)


@pytest.mark.parametrize("preset", ["shopify", "woocommerce"])
def test_a_column_the_file_lacks_leaves_that_field_of_existing_products_alone(engine, preset):
    """As with every preset: a re-import without a description column keeps the
    descriptions (these two presets used to count such columns as present and clear
    them)."""
    if preset == "shopify":
        full = "Handle,Title,Body (HTML),Variant SKU,Variant Price\nmug,Mug,<p>Big</p>,MUG-1,9.50\n"
        slim = "Handle,Title,Variant SKU,Variant Price\nmug,Mug,MUG-1,10.50\n"
    else:
        full = "Type,SKU,Name,Description,Regular price\nsimple,MUG-1,Mug,Big,9.50\n"
        slim = "Type,SKU,Name,Regular price\nsimple,MUG-1,Mug,10.50\n"
    assert engine.run(engine.write("full.csv", full), preset=preset).phase == "Succeeded"
    result = engine.run(engine.write("slim.csv", slim), preset=preset)
    assert result.phase == "Succeeded" and result.counts.updated == 1, result.message
    product = engine.products()["MUG-1"]
    assert product["description"] in ("<p>Big</p>", "Big") and float(product["price"]) == 10.5
