"""Getting the source file onto local disk, and telling its format and compression."""

from __future__ import annotations

import contextlib
import gzip
import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from productimport.engine.errors import (
    InvalidOptions,
    ParseError,
    SourceNotAllowed,
    SourceNotFound,
    SourceTooLarge,
    SourceUnreachable,
)
from productimport.engine.formats import HEAD_BYTES, format_from_filename, sniff
from productimport.engine.objectstore import fetch_s3_object
from productimport.engine.options import InputFormat


@dataclass(frozen=True)
class LocalSource:
    path: Path
    format: InputFormat
    gzip: bool
    name: str  # what the user gave, for messages


def local_path(source: str) -> Path | None:
    """`source` as a path on this machine, or None for a URL (s3://, https://, ...); a
    one-letter scheme is a Windows drive, not a URL."""
    scheme = urlparse(source).scheme
    return None if scheme and len(scheme) > 1 else Path(source)


def fetch(source: str, workdir: Path) -> tuple[Path, str]:
    """Return a local path for `source` (a path, s3://bucket/key or an http(s) URL)."""
    scheme = urlparse(source).scheme
    name = Path(urlparse(source).path).name or "source"
    if scheme == "s3":
        target = workdir / f"source-{name}"
        fetch_s3_object(source, target)
        return target, name
    if scheme in ("http", "https"):
        target = workdir / f"source-{name}"
        _download(source, target)
        return target, name
    path = local_path(source)
    if path is None:
        raise InvalidOptions(f"unsupported source scheme {scheme!r}: use a path, s3:// or https://")
    if not path.is_file():
        raise SourceNotFound(f"source file {source} does not exist")
    return path, path.name


def _download(url: str, target: Path) -> None:
    """Fetch a URL source under the administrator's egress policy (public addresses,
    https, re-checked redirects, a deadline and a byte cap: productimport/egress.py)."""
    from productimport import egress  # only for URL sources: it costs local imports start-up

    client = egress.Client()
    limits = client.settings
    try:
        with client.request(
            "GET",
            url,
            deadline_seconds=limits.source_deadline_seconds,
            max_bytes=limits.source_max_bytes,
        ) as answer:
            if answer.status in (404, 410):
                raise SourceNotFound(f"source URL {url} answered {answer.status}")
            if answer.status >= 500 or answer.status == 429:
                raise SourceUnreachable(f"source URL {url} answered {answer.status}")
            if answer.status >= 400:
                raise SourceNotFound(f"source URL {url} answered {answer.status} {answer.reason}")
            if answer.status >= 300:
                raise SourceNotFound(f"source URL {url} answered {answer.status} with no Location")
            with open(target, "wb") as out:
                for chunk in answer.iter_bytes():
                    out.write(chunk)
    except egress.Refused as exc:
        raise SourceNotAllowed(f"source URL refused: {exc}") from exc
    except egress.TooLarge as exc:
        raise SourceTooLarge(
            f"{exc}; an administrator sets the cap (egress.sourceMaxBytes)"
        ) from exc
    except egress.EgressError as exc:  # unreachable, or over the deadline: worth a retry
        raise SourceUnreachable(str(exc)) from exc
    finally:
        client.close()


@contextlib.contextmanager
def open_bytes(path: Path, compressed: bool) -> Iterator[io.BufferedIOBase]:
    """The file's bytes, decompressed when needed."""
    opener = gzip.open if compressed else open
    with opener(path, "rb") as handle:  # type: ignore[operator]
        yield handle  # type: ignore[misc]


def describe(
    path: Path, name: str, fmt: InputFormat | None, compressed: bool | None
) -> LocalSource:
    """Decide format and compression: explicit options first, then name, then content
    (the rules the upload API checks uploads with: engine/formats.py)."""
    with open(path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
    found = sniff(head)
    is_gzip = compressed if compressed is not None else found.gzip
    if is_gzip and not found.gzip:
        raise InvalidOptions(f"{name} was declared gzip-compressed but is not")
    named = format_from_filename(name)
    fmt = fmt or (InputFormat(named) if named else None)
    if fmt is None:
        if found.kind is None:
            raise ParseError(f"{name} is not a product file: {found.reason}")
        fmt = InputFormat(found.kind)
    return LocalSource(path=path, format=fmt, gzip=is_gzip, name=name)


def decompressed_copy(source: LocalSource, workdir: Path) -> Path:
    """A plain copy of a gzip source (for the line scanner's second pass)."""
    if not source.gzip:
        return source.path
    target = workdir / "source-decompressed"
    with open_bytes(source.path, True) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return target
