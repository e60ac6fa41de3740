"""Does the object store honour conditional writes? Checked before anything relies on it.

A catalog commit is a PUT of the table's next log entry with `If-None-Match: *` (delta-rs,
docs/loader-contract.md): on a store that ignores the header, two imports committing at
once would both "win" and one would silently overwrite the other. The chart allows "any
S3-compatible store", and not every one honours it, so the operator checks at start and
the loader before its first commit, on a key of their own, and refuse to run otherwise.
"""

from __future__ import annotations

import random
import time
import uuid

from productimport.engine.errors import ImportFailure, PreconditionFailed, TemporaryFailure
from productimport.engine.objectstore import ObjectStore

RACE_ATTEMPTS = 10


class StoreUnfit(ImportFailure):
    """The store would let concurrent commits overwrite each other (not retried: the
    same store answers the same way)."""

    reason = "StoreUnfit"


def check_conditional_writes(store: ObjectStore, key: str) -> None:
    """Raise StoreUnfit unless a create-only write of an existing key and a write with a
    stale ETag are both refused. Uses `key` only (overwritten each time, never deleted:
    the loader's credentials cannot delete)."""
    where = store.ref(key)
    for attempt in range(RACE_ATTEMPTS):
        try:
            current = _replaced(store, key, where)
            break
        except PreconditionFailed:
            # Another import checked the same key at that moment (a refusal of a
            # conditional write is what an honest store does): look again.
            time.sleep(random.uniform(0, 0.05 * (attempt + 1)))
    else:
        raise TemporaryFailure(f"{where}: other imports kept writing it; checking again later")
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


def _replaced(store: ObjectStore, key: str, where: str) -> tuple[bytes, str]:
    """Create the key if it is missing, then replace it knowing its ETag (both must
    succeed unless another writer got there first: PreconditionFailed). Returns what it
    was before the replacement, whose ETag is now stale."""
    current = store.get_with_etag(key)
    if current is None:
        store.put_if(key, b"created", None)
        current = store.get_with_etag(key)
        if current is None:
            raise StoreUnfit(f"{where} was written but cannot be read back")
    store.put_if(key, uuid.uuid4().hex.encode(), current[1])
    return current
