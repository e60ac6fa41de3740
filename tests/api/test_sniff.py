"""The declared format is checked against the file's first bytes (no server needed)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from api_testdata import DATA

from productimport.api.sniff import FormatError, check_format
from productimport.engine.formats import format_from_filename


def head(path: Path) -> bytes:
    return path.read_bytes()[: 64 * 1024]


def test_real_csv_and_json_files_are_recognised() -> None:
    csv = head(DATA / "elasticpath-pcm" / "pim_product_import_example.csv")
    assert check_format("csv", "x.csv", csv) == ("csv", False)
    assert check_format(None, None, csv) == ("csv", False)
    seed = head(DATA / "medusa-starter-seed" / "seed.json")
    assert check_format("json", "seed.json", seed)[0] in ("json", "jsonl")


def test_gzip_is_looked_into() -> None:
    raw = (DATA / "woocommerce-sample-data" / "sample_products.csv").read_bytes()
    assert check_format("csv", "p.csv.gz", gzip.compress(raw)[:4096]) == ("csv", True)


def test_json_lines_versus_json_array() -> None:
    lines = b'{"sku": "a"}\n{"sku": "b"}\n'
    assert check_format("json", None, lines) == ("jsonl", False)
    array = json.dumps([{"sku": "a"}], indent=2).encode()
    assert check_format("jsonl", None, array) == ("json", False)


def test_declared_csv_with_json_content_is_422_naming_both() -> None:
    with pytest.raises(FormatError) as err:
        check_format("csv", "products.csv", b'[{"sku": "a"}]')
    assert err.value.status == 422
    assert "csv" in err.value.detail and "json" in err.value.detail


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 100, "ZIP"),
        (b"%PDF-1.7\n%\xe2\xe3", "PDF"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "PNG"),
        (b"sku,name\x00\x00\x01\x02", "NUL"),
        (b"", "empty"),
        (b"\xef\xbb\xbf  \r\n", "empty"),
    ],
)
def test_unsupported_content_is_415(content: bytes, what: str) -> None:
    with pytest.raises(FormatError) as err:
        check_format("csv", "x.csv", content)
    assert err.value.status == 415
    assert what.lower() in err.value.detail.lower()


def test_bom_is_not_mistaken_for_content() -> None:
    assert check_format(None, None, b"\xef\xbb\xbfsku,name\n1,a\n") == ("csv", False)


def test_format_from_filename() -> None:
    assert format_from_filename("Products.CSV") == "csv"
    assert format_from_filename("feed.ndjson.gz") == "jsonl"
    assert format_from_filename("data.json") == "json"
    assert format_from_filename("noext") is None
