"""The engine's hand-tuned SQL expressions mean exactly what the plain ones do."""

from __future__ import annotations

import duckdb

from productimport.engine.presets import TRIMMED_CODE_POINTS, text


def test_trimmed_code_points_are_exactly_what_trim_removes():
    con = duckdb.connect()
    removed = {
        row[0]
        for row in con.execute(
            "SELECT cp FROM range(1, 65536) t(cp) "
            "WHERE (cp < 55296 OR cp > 57343) AND trim(chr(cp::INTEGER) || 'a') = 'a'"
        ).fetchall()
    }
    assert removed == set(TRIMMED_CODE_POINTS)


def test_text_equals_nullif_trim_on_awkward_cells():
    con = duckdb.connect()
    cells = [
        None, "", " ", "  ", "a", " a", "a ", " a ", "\u00a0a\u3000", "a\u2009", "\u2009",
        "\ta\n", "é", "e\u0301", "x\u0600 ", "\u0600 ", "a b", "ü ", " ü", "\u200b", "a\u200b",
        "line\r\n", '"quoted" ', "\u3000\u3000", "a" * 1000 + " ",
    ]  # fmt: skip
    for cell in cells:
        fast, plain = con.execute(
            f"SELECT {text('c')}, nullif(trim(c), '') FROM (SELECT ?::VARCHAR AS c)", [cell]
        ).fetchone()
        assert fast == plain, repr(cell)
