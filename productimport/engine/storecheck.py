"""Does the object store honour conditional writes? Checked before anything relies on it.

A catalog commit is a PUT of the table's next log entry with `If-None-Match: *` (delta-rs,
docs/loader-contract.md): on a store that ignores the header, two imports committing at
once would both "win" and one would silently overwrite the other. The chart allows "any
S3-compatible store", and not every one honours it, so the operator checks at start and
the loader before its first commit, on a key of their own, and refuse to run otherwise.
"""

from __future__ import annotations

import uuid

from productimport.engine.errors import ImportFailure, PreconditionFailed
from productimport.engine.objectstore import ObjectStore


class StoreUnfit(ImportFailure):
    """The store would let concurrent commits overwrite each other (not retried: the
    same store answers the same way)."""

    reason = "StoreUnfit"


def check_conditional_writes(store: ObjectStore, key: str) -> None:
    """Raise StoreUnfit unless a create-only write of an existing key and a write with a
    stale ETag are both refused. Uses `key` only (overwritten each time, never deleted:
    the loader's credentials cannot delete)."""
    where = store.ref(key)
    current = store.get_with_etag(key)
    if current is None:
        store.put_if(key, b"created", None)
        current = store.get_with_etag(key)
        if current is None:
            raise StoreUnfit(f"{where} was written but cannot be read back")
    # Replace it knowing its ETag: must succeed.
    store.put_if(key, uuid.uuid4().hex.encode(), current[1])
    try:
        store.put_if(key, b"create-only", None)
    except PreconditionFailed:
        pass
    else:
        raise StoreUnfit(
            f"the object store let a create-only write (If-None-Match: *) replace {where}: "
            "two imports committing at once could overwrite each other; use a store that "
            "honours conditional writes (MinIO, AWS S3, ...)"
        )
    try:
        store.put_if(key, b"stale", current[1])
    except PreconditionFailed:
        return
    raise StoreUnfit(
        f"the object store let a write with a stale ETag (If-Match) replace {where}; use a "
        "store that honours conditional writes (MinIO, AWS S3, ...)"
    )
