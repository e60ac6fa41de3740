"""The engine's hand-tuned SQL expressions mean exactly what the plain ones do."""

from __future__ import annotations

import duckdb

from productimport.engine.presets import text
from productimport.engine.validate import tags_list


def test_trim_removes_only_ascii_space_and_non_ascii_code_points():
    # text() relies on it: a cell starting and ending with a printable ASCII character
    # other than space is left as it is.
    con = duckdb.connect()
    removed = {
        row[0]
        for row in con.execute(
            "SELECT cp FROM range(1, 65536) t(cp) "
            "WHERE (cp < 55296 OR cp > 57343) AND trim(chr(cp::INTEGER) || 'a') = 'a'"
        ).fetchall()
    }
    assert 0x20 in removed and 0xA0 in removed and 0x3000 in removed  # the query works
    assert all(cp == 0x20 or cp >= 0x80 for cp in removed), sorted(removed)


def assert_same_on(cells: list[str | None], fast: str, plain: str) -> None:
    """The hand-tuned expression and the plain one agree on every cell `c`."""
    con = duckdb.connect()
    for cell in cells:
        got, expected = con.execute(
            f"SELECT {fast}, {plain} FROM (SELECT ?::VARCHAR AS c)", [cell]
        ).fetchone()
        assert got == expected, repr(cell)


def test_text_equals_nullif_trim_on_awkward_cells():
    cells = [
        None, "", " ", "  ", "a", " a", "a ", " a ", "\u00a0a\u3000", "a\u2009", "\u2009",
        "\ta\n", "é", "e\u0301", "x\u0600 ", "\u0600 ", "a b", "ü ", " ü", "\u200b", "a\u200b",
        "line\r\n", '"quoted" ', "\u3000\u3000", "a" * 1000 + " ", "!", "! ", "~", " ~",
        "\x7f", "\x7f ", "\x01a", "\u0080", "\u0080 ", "a\u00a0", "\u00a0", "\U0001f600 ",
        " \U0001f600", "a" * 1000 + "\u3000", "ab\u3000cd",
    ]  # fmt: skip
    assert_same_on(cells, text("c"), "nullif(trim(c), '')")


def test_tags_list_equals_split_trim_and_drop_empty_on_awkward_cells():
    plain = (
        "list_filter(list_transform(string_split(c, ','), lambda t: trim(t)), lambda t: t <> '')"
    )
    cells = [
        "a", "a,b", "a, b", " a", "a ", "a,,b", ",a", "a,", ",", "", "é,b", "a\u00a0,b",
        "a\t,b", "a,\u3000b", "x" * 300, "a,b,c,d", "kitchen,handmade", "a-b,c_d,e.f",
        None,
    ]  # fmt: skip
    assert_same_on(cells, tags_list("c"), f"coalesce({plain}, []::VARCHAR[])")
