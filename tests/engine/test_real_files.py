"""The real product files from public e-commerce projects import with the matching preset."""

from __future__ import annotations

import pytest

REAL_FILES = [
    # (preset, path under shared/data, products expected)
    ("elasticpath", "elasticpath-pcm/pim_product_import_example.csv", 5),
    # 17 rows: one only adds an image to its Handle group and is folded into it.
    ("shopify", "shopify-product-template/kcohen1997/product_template.csv", 16),
    ("shopify", "shopify-product-template/umsu2/product_template.csv", 3),
    ("woocommerce", "woocommerce-sample-data/sample.csv", 7),
    ("woocommerce", "woocommerce-sample-data/sample_products.csv", 25),
    ("native", "magento2-sample-data/products.csv", 1994),
    ("native", "akeneo-pim-docs/product.csv", 15),
    ("native", "prestashop-csv-import/products_import.csv", 7),
]


@pytest.mark.parametrize(
    ("preset", "relative", "expected"), REAL_FILES, ids=[r[1] for r in REAL_FILES]
)
def test_real_file_imports_with_zero_rejected_rows(engine, shared_data, preset, relative, expected):
    mapping = {}
    if relative.startswith("prestashop"):
        mapping = {"Reference #": "sku", "Name *": "name"}
    result = engine.run(shared_data / relative, preset=preset, mapping=mapping)
    assert result.phase == "Succeeded", result.message
    assert result.counts.rejected == 0, result.errors
    assert result.counts.created == expected
    assert len(engine.products()) == expected


def test_elasticpath_example_maps_pcm_columns(engine, shared_data):
    engine.run(shared_data / "elasticpath-pcm/pim_product_import_example.csv", preset="elasticpath")
    tab = engine.products()["212764115"]  # numeric SKUs stay text: no leading zero lost
    assert tab["name"] == "Samsung Galaxy Tab A8 Tablet 10.5"
    assert tab["status"] == "live" and tab["commodity_type"] == "physical"
    assert tab["external_ref"] == "268522c0-75b5-4a74-ac1e-b01f3ca1baf7"
    assert tab["main_image"] == "ab90d4a1-3a9b-4285-a768-48adaf68d52a"
    # `template: <uuid>: condition` custom data is kept, with the header's spaces removed.
    assert tab["attributes"] == {"template:802729a1-9c22-45b8-bed0-2afb61741f82:condition": "A8"}


def test_elasticpath_updates_by_external_ref_and_by_id(engine):
    header = "external_ref,name,sku,slug,commodity_type,description,status\n"
    first = engine.write("a.csv", header + "ref-1,Lamp,L-1,lamp,physical,A lamp,draft\n")
    assert engine.run(first, preset="elasticpath").counts.created == 1
    product_id = engine.products()["L-1"]["id"]

    # Same external_ref, no sku: Elastic Path updates the product it matches.
    by_ref = engine.write("b.csv", header + "ref-1,Desk lamp,,lamp,physical,A lamp,live\n")
    result = engine.run(by_ref, preset="elasticpath")
    assert (result.counts.created, result.counts.updated) == (0, 1)
    assert engine.products()["L-1"]["name"] == "Desk lamp"

    # By id (the catalog's product id), external_ref absent.
    by_id = engine.write(
        "c.csv",
        "id,name,slug,commodity_type,description,status\n"
        f"{product_id},Floor lamp,lamp,physical,A lamp,live\n",
    )
    result = engine.run(by_id, preset="elasticpath")
    assert result.counts.updated == 1, result.errors
    assert engine.products()["L-1"]["id"] == product_id

    # An external_ref that matches nothing creates a product keyed by it.
    new = engine.write("d.csv", header + "ref-2,Chair,,chair,physical,A chair,live\n")
    assert engine.run(new, preset="elasticpath").counts.created == 1
    assert engine.products()["ref-2"]["external_ref"] == "ref-2"


def test_elasticpath_row_needs_id_or_external_ref(engine):
    path = engine.write(
        "e.csv",
        "name,sku,slug,commodity_type,description,status\n"
        "Lamp,L-1,lamp,physical,A lamp,live\n"
        "Desk,D-1,desk,physical,A desk,live\n",
    )
    result = engine.run(path, preset="elasticpath", error_policy={"maxErrorRatio": 1})
    assert {e.code for e in result.errors} == {"missing_required"}
    assert result.errors[0].column == "external_ref"


def test_shopify_variants_inherit_group_fields_and_keep_handle_as_parent(engine, shared_data):
    engine.run(
        shared_data / "shopify-product-template/kcohen1997/product_template.csv", preset="shopify"
    )
    products = engine.products()
    variant = products["SRT_COT_222"]  # a row with a blank product-level section
    assert variant["name"] == "Example T-Shirt"
    assert variant["parent_sku"] == "example-shirt"
    assert variant["status"] == "live"  # Shopify 'active'
    assert variant["price"] == 25
    assert variant["attributes"]["Vendor"] == "Acme"
    assert variant["attributes"]["Option2 Value"] == "M"
    assert products["HAT_GRY_275"]["status"] == "draft"  # 'archived' is not live
    # The image-only row of example-pants became part of its group, not a product.
    pants = products["PNT_DEN_285"]
    assert "female-fashion-model" in pants["attributes"]["Images"]


def test_shopify_variant_without_sku_is_keyed_by_handle_and_options(engine, shared_data):
    engine.run(
        shared_data / "shopify-product-template/umsu2/product_template.csv", preset="shopify"
    )
    keys = set(engine.products())
    assert keys == {
        'example-t-shirt/Lithograph - Height: 9" x Width: 12"',
        "example-shirt-s",
        "example-shirt-m",
    }


def test_woocommerce_variations_keep_parent_and_meta_columns(engine, shared_data):
    engine.run(shared_data / "woocommerce-sample-data/sample_products.csv", preset="woocommerce")
    products = engine.products()
    red = products["woo-vneck-tee-red"]
    assert red["parent_sku"] == "woo-vneck-tee"
    assert red["price"] == 20
    assert products["woo-album"]["commodity_type"] == "digital"
    assert "Meta: _wpcom_is_markdown" in products["woo-vneck-tee"]["attributes"]


def test_woocommerce_variation_without_sku_or_name_gets_them_from_parent(engine, shared_data):
    engine.run(shared_data / "woocommerce-sample-data/sample.csv", preset="woocommerce")
    variations = [p for p in engine.products().values() if p["parent_sku"] == "WOOIDEA"]
    assert sorted(p["name"] for p in variations) == [
        "Ship Your Idea - Black, M",
        "Ship Your Idea - Green, L",
    ]
