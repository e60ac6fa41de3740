"""Check a declared file format against the file's first bytes.

The loader reads csv, json (an array of objects) and jsonl, each optionally gzipped.
Content that is none of these (a spreadsheet, a PDF, an image, any binary) is refused
with 415; content of a supported kind that is not the declared one with 422, naming both,
so a client that sent `format=csv` with a JSON body learns why.
"""

from __future__ import annotations

from productimport.engine.formats import sniff


class FormatError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def check_format(declared: str | None, filename: str | None, head: bytes) -> tuple[str, bool]:
    """The format to import with and whether it is gzipped, or FormatError."""
    found = sniff(head)
    if found.kind is None:
        raise FormatError(415, f"unsupported file content: {found.reason}; send csv, json or jsonl")
    if declared is None:
        return found.kind, found.gzip
    compatible = declared == found.kind or {declared, found.kind} == {"json", "jsonl"}
    if not compatible:
        raise FormatError(
            422, f"the file was declared as {declared} but its content looks like {found.kind}"
        )
    # json vs jsonl: both reach the loader's JSON reader; pass what the bytes say.
    return found.kind, found.gzip
