"""What a product file is, from its name and its first bytes: one set of rules for the
upload API (which checks a declared format against them) and the loader (which picks the
format when none is declared).

csv, json (an array of objects, or one object) and jsonl, each optionally gzipped;
anything recognisably binary (a spreadsheet, a PDF, an image, an archive) is none of them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

# Enough of a file to tell what it is (and to decompress a gzip stream's start).
HEAD_BYTES = 64 * 1024

FORMATS = ("csv", "json", "jsonl")

_BINARY_MAGIC = {
    b"PK\x03\x04": "a ZIP archive (xlsx/ods spreadsheets are ZIP files)",
    b"\xd0\xcf\x11\xe0": "an OLE document (xls)",
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"BZh": "a bzip2 archive",
    b"\xfd7zXZ": "an xz archive",
    b"7z\xbc\xaf": "a 7z archive",
    b"PAR1": "a Parquet file",
}


@dataclass(frozen=True)
class Sniffed:
    kind: str | None  # csv | json | jsonl, or None when unsupported
    gzip: bool
    reason: str = ""  # why the content is unsupported


def _gunzip_head(head: bytes) -> bytes:
    # A truncated stream is expected (we only hold the head): decompress what is there.
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 64 * 1024)
    except zlib.error:
        return b""


def sniff(head: bytes) -> Sniffed:
    gz = head[:2] == b"\x1f\x8b"
    data = _gunzip_head(head) if gz else head
    if gz and not data:
        return Sniffed(None, True, "a gzip stream that does not decompress")
    for magic, what in _BINARY_MAGIC.items():
        if data.startswith(magic):
            return Sniffed(None, gz, what)
    text = data.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    if not text:
        return Sniffed(None, gz, "an empty file")
    sample = text[:8192]
    if b"\x00" in sample:
        # UTF-16 text also lands here: the loader reads 8-bit encodings only.
        return Sniffed(None, gz, "binary data (NUL bytes)")
    if text[:1] == b"[":
        return Sniffed("json", gz)
    if text[:1] == b"{":
        # One object per line is JSON Lines; a single (multi-line) object is JSON.
        first_line = text.split(b"\n", 1)[0].rstrip(b"\r").rstrip()
        return Sniffed("jsonl" if first_line.endswith(b"}") else "json", gz)
    return Sniffed("csv", gz)


def format_from_filename(filename: str | None) -> str | None:
    if not filename:
        return None
    name = filename.lower().removesuffix(".gz")
    for kind in ("jsonl", "ndjson", "json", "csv", "tsv", "txt"):
        if name.endswith("." + kind):
            return {"ndjson": "jsonl", "tsv": "csv", "txt": "csv"}.get(kind, kind)
    return None
