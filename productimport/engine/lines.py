"""Physical line numbers for CSV records.

DuckDB numbers records, not lines: a record whose quoted description holds three line
breaks moves every later line number by three. A user opening the file in an editor
needs the physical line, so error records carry it. This scanner walks the bytes once,
tracking quote parity per line (RFC 4180: a doubled quote toggles twice, so parity is
exact), and notes where each record starts. It runs only when some row has an error,
and only records the start lines asked for.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from pathlib import Path

from productimport.engine.source import open_bytes


def record_start_lines(
    path: Path,
    *,
    compressed: bool,
    quote: str | None,
    escape: str | None,
    wanted: Iterable[int],
    spans: dict[int, int] | None = None,
) -> dict[int, int]:
    """Map record numbers (0 = the first record of the file, e.g. the header) to the
    1-based physical line where each starts. Blank lines outside quotes are not records
    (DuckDB skips them too).

    `spans` gives, for records DuckDB rejected, how many lines it consumed: after a
    broken quote DuckDB resumes at the next line, which quote parity cannot know, so the
    scanner skips exactly that many lines and starts again outside quotes."""
    spans = spans or {}
    targets = sorted(set(wanted))
    found: dict[int, int] = {}
    if not targets:
        return found
    quote_byte = quote.encode("latin-1") if quote else None
    escaped_quote = (
        (escape + quote).encode("latin-1") if quote and escape and escape != quote else None
    )
    next_target = 0
    record = -1
    line_no = 0
    inside = False
    skip = 0
    pending = b""
    with open_bytes(path, compressed) as handle:
        while next_target < len(targets):
            chunk = handle.read(1 << 22)
            if not chunk:
                if pending:
                    chunk, pending = pending + b"\n", b""
                else:
                    break
            else:
                chunk, pending = pending + chunk, b""
                cut = chunk.rfind(b"\n")
                if cut < 0:
                    pending = chunk
                    continue
                chunk, pending = chunk[: cut + 1], chunk[cut + 1 :]
            lines = chunk.split(b"\n")
            lines.pop()  # the empty tail after the final newline
            for line in lines:
                line_no += 1
                if skip:
                    skip -= 1
                    continue
                if not inside:
                    if not line.strip(b"\r"):
                        continue  # blank line between records
                    record += 1
                    if record == targets[next_target]:
                        found[record] = line_no
                        next_target += 1
                        if next_target == len(targets):
                            return found
                    if record in spans:
                        skip = spans[record] - 1
                        continue
                if quote_byte is not None:
                    count = line.count(quote_byte)
                    if escaped_quote:
                        count -= line.count(escaped_quote)
                    if count & 1:
                        inside = not inside
    return found


def records_for_valid_rows(
    valid_rows: Iterable[int], rejected_records: list[int]
) -> dict[int, int]:
    """Map 1-based indexes of rows DuckDB accepted to 1-based data-record numbers.

    Rejected records take their place in the numbering: valid row v is preceded by every
    rejected record j (1-based rank, sorted) with R_j - j < v.
    """
    rejected = sorted(set(rejected_records))
    thresholds = [number - rank for rank, number in enumerate(rejected, start=1)]
    return {v: v + bisect.bisect_left(thresholds, v) for v in valid_rows}
