"""The /pcm/ row limit counts the rows of the decompressed file for a gzipped upload,
decompressing incrementally and for counting only (no server needed)."""

from __future__ import annotations

import gzip
import time
import zlib

import pytest

from productimport.api.errors import ApiError
from productimport.api.formstream import INFLATE_CHUNK, FileRowCounter, RowCounter

CSV = b'sku,description\n1,"two\nlines"\n2,"say ""hi""\nthere"\n3,plain\n'


def count(data: bytes, chunk: int, limit: int | None = None) -> FileRowCounter:
    counter = FileRowCounter(limit)
    for i in range(0, len(data), chunk):
        counter.feed(data[i : i + chunk])
    counter.finish()
    return counter


def plain_rows(data: bytes) -> int:
    counter = RowCounter()
    counter.feed(data)
    return counter.rows


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 4096, 1 << 20])
def test_a_gzipped_file_counts_its_text_rows_not_its_bytes(chunk: int) -> None:
    text = CSV * 500
    counter = count(gzip.compress(text), chunk)
    assert counter.gzip is True
    assert counter.rows == plain_rows(text) == 2000


@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_a_plain_file_is_counted_as_before(chunk: int) -> None:
    counter = count(CSV, chunk)
    assert counter.gzip is False
    assert counter.rows == 4


def test_a_one_byte_file() -> None:
    assert count(b"x", 1).rows == 1
    assert count(b"", 1).rows == 0


def test_concatenated_members_are_one_file() -> None:
    data = gzip.compress(b"sku\n1\n") + gzip.compress(b"2\n3\n")
    for chunk in (1, 3, 1000):
        assert count(data, chunk).rows == 4


def test_trailing_garbage_after_the_last_member_is_ignored_as_gzip_does() -> None:
    data = gzip.compress(b"sku\n1\n2\n") + b"\x00" * 100
    assert count(data, 7).rows == 3


def test_a_corrupt_stream_is_422() -> None:
    data = bytearray(gzip.compress(CSV * 100))
    data[20:40] = b"\xff" * 20
    with pytest.raises(ApiError) as err:
        count(bytes(data), 16)
    assert err.value.status == 422
    assert "gzip" in err.value.detail


def test_the_limit_stops_a_small_file_of_very_many_rows_early() -> None:
    """A bomb: 2 GiB of newlines, about 2 MB compressed. Counting stops just past the
    limit, having inflated little more than one INFLATE_CHUNK beyond it."""
    inflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\n" * (1 << 20)
    data = b"".join(inflater.compress(block) for _ in range(2048)) + inflater.flush()
    assert len(data) < 4 * 1024 * 1024
    started = time.monotonic()
    counter = count(data, 65536, limit=50_000)
    assert counter.over
    assert counter.rows <= 50_000 + INFLATE_CHUNK
    assert time.monotonic() - started < 5
