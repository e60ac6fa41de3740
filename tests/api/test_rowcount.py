"""Quote-aware CSV record counting for the /pcm/ row limit (no server needed)."""

from __future__ import annotations

import csv
import io

import pytest
from api_testdata import DATA

from productimport.api.formstream import RowCounter


def count(data: bytes, chunk: int) -> int:
    counter = RowCounter()
    for i in range(0, len(data), chunk):
        counter.feed(data[i : i + chunk])
    return counter.rows


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 1 << 20])
def test_newlines_inside_quotes_do_not_count(chunk: int) -> None:
    data = b'sku,description\n1,"two\nlines"\n2,"say ""hi""\nthere"\n3,plain'
    assert count(data, chunk) == 4


@pytest.mark.parametrize(
    "path",
    [
        "elasticpath-pcm/pim_product_import_example.csv",
        "woocommerce-sample-data/sample_products.csv",
        "magento2-sample-data/products_gear_bags.csv",
        "prestashop-csv-import/products_import.csv",
    ],
)
def test_matches_the_csv_module_on_real_files(path: str) -> None:
    data = (DATA / path).read_bytes()
    expected = sum(1 for _ in csv.reader(io.StringIO(data.decode("utf-8", "replace"))))
    assert count(data, 4096) == expected


def test_trailing_newline_and_crlf() -> None:
    assert count(b"a\r\nb\r\n", 3) == 2
    assert count(b"a\nb", 3) == 2
    assert count(b"", 3) == 0
