"""Input formats: CSV dialects and encodings, JSON, JSON Lines, gzip."""

from __future__ import annotations

import gzip
import json

HEADER = "sku,name,price,currency,description\n"


def test_semicolon_delimiter_is_sniffed(engine):
    path = engine.write("p.csv", "sku;name;price\nA;Alpha;1,5\nB;Beta;2\n")
    result = engine.run(path, error_policy={"maxErrorRatio": 1})
    # '1,5' is not a decimal here: a decimal comma is rejected, not silently misread.
    assert result.counts.created == 1
    assert result.errors[0].code == "invalid_number"
    assert result.errors[0].line == 2


def test_explicit_tab_delimiter(engine):
    path = engine.write("p.tsv", "sku\tname\nA\tAlpha, with comma\n")
    engine.run(path, csv={"delimiter": "\t"})
    assert engine.products()["A"]["name"] == "Alpha, with comma"


def test_latin1_accents_survive(engine):
    path = engine.write("p.csv", "sku,name\nC1,Crème brûlée à la française\n", encoding="latin-1")
    result = engine.run(path, csv={"encoding": "latin-1"})
    assert result.phase == "Succeeded"
    assert engine.products()["C1"]["name"] == "Crème brûlée à la française"


def test_utf8_bom_does_not_leak_into_the_first_header(engine):
    path = engine.write("p.csv", "\ufeffsku,name\nA,Ä\n")
    result = engine.run(path)
    assert result.counts.created == 1, result.errors
    assert engine.products()["A"]["name"] == "Ä"


def test_crlf_and_quoted_multiline_fields(engine):
    path = engine.write(
        "p.csv",
        'sku,name,description\r\nA,Alpha,"first line\r\nsecond, with comma"\r\nB,"Beta ""B""",x',
    )
    engine.run(path)
    products = engine.products()
    assert products["A"]["description"] == "first line\r\nsecond, with comma"
    assert products["B"]["name"] == 'Beta "B"'


def test_header_case_and_whitespace_differences(engine):
    path = engine.write("p.csv", " SKU , Name ,  Price\nA,Alpha,3\n")
    engine.run(path)
    assert engine.products()["A"]["price"] == 3


def test_unmapped_columns_are_kept_in_attributes(engine):
    path = engine.write("p.csv", "sku,name,Brand,Colour\nA,Alpha,Acme,\n")
    engine.run(path)
    assert engine.products()["A"]["attributes"] == {"Brand": "Acme"}


def test_blank_attribute_cells_are_left_out_and_the_rest_kept_as_written(engine):
    content = (
        "sku,name,Brand,Colour,Size\n"
        "A,Alpha,Acme,red,XL\n"  # every cell plainly non-blank
        "B,Beta,  , blue,\u3000\n"  # spaces only, a leading space, a wide space only
        "C,Gamma,\u00e9t\u00e9,~,!\n"  # non-ASCII first, then the edges of visible ASCII
    )
    engine.run(engine.write("p.csv", content))
    products = engine.products()
    assert products["A"]["attributes"] == {"Brand": "Acme", "Colour": "red", "Size": "XL"}
    assert products["B"]["attributes"] == {"Colour": " blue"}
    assert products["C"]["attributes"] == {"Brand": "\u00e9t\u00e9", "Colour": "~", "Size": "!"}


def test_explicit_mapping_overrides_the_preset(engine):
    path = engine.write("p.csv", "code,title,Internal note\nA,Alpha,secret\n")
    engine.run(path, mapping={"code": "sku", "title": "name", "Internal note": "ignore"})
    assert engine.products()["A"]["name"] == "Alpha"
    assert engine.products()["A"]["attributes"] == {}


def test_mapping_to_an_unknown_column_fails_with_a_reason(engine):
    path = engine.write("p.csv", "sku,name\nA,Alpha\n")
    result, code = engine.run_with_code(path, mapping={"nope": "sku"})
    assert (result.phase, result.reason, code) == ("Failed", "InvalidOptions", 65)
    assert "nope" in result.message


def test_json_array(engine):
    docs = [
        {"sku": "A", "name": "Alpha", "price": 2.5, "color": "red"},
        {"sku": "B", "name": "Beta", "dims": {"w": 1}},
    ]
    engine.run(engine.write("p.json", json.dumps(docs)))
    products = engine.products()
    assert products["A"]["price"] == 2.5
    assert products["A"]["attributes"] == {"color": "red"}
    assert json.loads(products["B"]["attributes"]["dims"]) == {"w": 1}


def test_json_lines_with_a_malformed_line(engine):
    lines = '{"sku": "A", "name": "Alpha"}\n{"sku": "B", "name": \n{"sku": "C", "name": "C"}\n'
    result = engine.run(engine.write("p.jsonl", lines), error_policy={"maxErrorRatio": 1})
    assert result.counts.created == 2
    assert [(e.line, e.code) for e in result.errors] == [(2, "malformed_row")]


def test_json_that_is_not_an_array_fails_the_import_with_a_reason(engine):
    result, code = engine.run_with_code(engine.write("p.json", '{"products": []}'))
    assert (result.phase, result.reason, code) == ("Failed", "ParseError", 65)


def test_gzip_csv_detected_from_content(engine):
    data = gzip.compress((HEADER + 'A,Alpha,1,EUR,"multi\nline"\n').encode())
    engine.run(engine.write("upload.bin.gz", data), format="csv")
    assert engine.products()["A"]["description"] == "multi\nline"


def test_gzip_jsonl_format_from_name(engine):
    data = gzip.compress(b'{"sku": "A", "name": "Alpha"}\n{"sku": "B", "name": "Beta"}\n')
    result = engine.run(engine.write("feed.jsonl.gz", data))
    assert result.counts.created == 2


def test_empty_file_fails_with_a_reason(engine):
    result, code = engine.run_with_code(engine.write("p.csv", ""))
    assert result.reason == "ParseError" and code == 65


def test_a_spreadsheet_without_a_declared_format_is_refused_by_name_of_what_it_is(engine):
    """The loader and the upload API tell files apart by one set of rules
    (engine/formats.py): a spreadsheet is not read as a CSV of garbage."""
    result, code = engine.run_with_code(engine.write("export", b"PK\x03\x04" + b"\x00" * 200))
    assert (result.reason, code) == ("ParseError", 65)
    assert "a ZIP archive" in result.message


def test_one_object_per_line_is_jsonl_and_one_object_over_lines_is_json():
    from productimport.engine.formats import sniff

    assert sniff(b'{"sku": "A"}\n{"sku": "B"}\n').kind == "jsonl"
    assert sniff(b'{\n  "sku": "A"\n}\n').kind == "json"
    assert sniff(gzip.compress(b'[{"sku": "A"}]')).kind == "json"
