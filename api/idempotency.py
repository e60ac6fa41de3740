"""`Idempotency-Key` on the upload routes (draft-ietf-httpapi-idempotency-key-header).

A key is scoped to the namespace (tenant) and the route family (native, saas, pcm). The
ProductImport's name is derived from a hash of that scope, so the API server, which
admits one object per name, is the lock: of two requests with one key, one create wins
and the other gets 409 AlreadyExists and answers with the winner's resource. What made
the first request is kept on the resource as a fingerprint (the file's SHA-256, its file
name, the form's fields, the catalog), so a retry that sends something else under the
same key is refused (422 `idempotency_key_reused`, as the draft and Stripe answer it)
instead of being taken for the first. A key lives as long as its resource: deleting the
ProductImport frees it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Header, Response

from productimport.api.errors import ApiError
from productimport.api.formstream import Sink, Upload
from productimport.models.resource import GROUP

HEADER = "Idempotency-Key"
# On an answer that is the first request's resource rather than a new one (Stripe's name).
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# Visible ASCII but `"` and `\`: room for UUIDs, ULIDs and hashes, nothing that needs
# escaping in a header, an annotation or a log line.
_KEY = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
ANNOTATION_KEY = f"{GROUP}/idempotency-key"
ANNOTATION_FINGERPRINT = f"{GROUP}/idempotency-fingerprint"


# The routes' parameter. Checked by parse_key, not by FastAPI: a bad key is a 400 with
# this API's error envelope, like every other malformed request header.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=HEADER,
        description="Makes a retry safe: a request with a key already used in this "
        "namespace on this route is answered with the import that key created (same "
        "status and body, header `Idempotent-Replayed: true`) and its file is not "
        "stored again; the same key with another file, file name, field or catalog is "
        "422 `idempotency_key_reused`. 1-255 visible ASCII characters (a UUID v4 is a "
        "good key); the key is free again once its import is deleted.",
    ),
]


def mark_replay(response: Response, replayed: bool) -> None:
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"


def parse_key(raw: str | None) -> str | None:
    """The key of the header, or None without one. The draft sends a Structured Field
    string (`"abc"`), Stripe's clients send it bare (`abc`): both are taken. 400 for
    anything else, before any of the body is read (so the connection is closed)."""
    if raw is None:
        return None
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not value or len(value) > MAX_KEY_LENGTH or not _KEY.match(value):
        raise ApiError(
            400,
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} visible ASCII characters (no quotes "
            "or backslashes inside), optionally in double quotes; a UUID v4 is a good key",
            code="invalid_idempotency_key",
            headers={"Connection": "close"},
        )
    return value


@dataclass(frozen=True)
class Scope:
    """One key in one namespace on one route family."""

    api: str
    namespace: str
    key: str

    @property
    def resource_name(self) -> str:
        # 128 bits of SHA-256: no two keys share a name in practice. The route family
        # leads so that `kubectl get pi` tells these from generated names.
        text = json.dumps([self.api, self.namespace, self.key])
        return f"{self.api}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def scope(api: str, namespace: str, header: str | None) -> Scope | None:
    """The scope of the request's key (400 for a malformed one); None without a key."""
    key = parse_key(header)
    return Scope(api, namespace, key) if key is not None else None


class Fingerprint:
    """The SHA-256 of the file's bytes as they stream by, and the digest of the whole
    request once the form has ended."""

    def __init__(self) -> None:
        self._file = hashlib.sha256()

    def sink(self, inner: Sink | None) -> Sink:
        """A sink that hashes, then passes the bytes on to `inner` (None: nowhere, for a
        replay, which stores nothing)."""
        return _HashingSink(self._file, inner)

    def digest(self, catalog: str, upload: Upload) -> str:
        doc = {
            "catalog": catalog,
            "fields": dict(sorted(upload.fields.items())),
            "filename": upload.filename,
            "file": self._file.hexdigest(),
            "size": upload.size,
        }
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class _HashingSink:
    def __init__(self, sha: Any, inner: Sink | None) -> None:
        self._sha = sha
        self._inner = inner

    async def write(self, data: bytes | memoryview) -> None:
        self._sha.update(data)
        if self._inner is not None:
            await self._inner.write(data)


def annotations(scope: Scope, digest: str) -> dict[str, str]:
    return {ANNOTATION_KEY: scope.key, ANNOTATION_FINGERPRINT: digest}


def replay(scope: Scope, digest: str, existing: dict[str, Any]) -> dict[str, Any]:
    """The resource the key already made, when this request is the same as the one that
    made it; 422 otherwise (a new upload needs a new key)."""
    seen = existing["metadata"].get("annotations") or {}
    name = existing["metadata"]["name"]
    if seen.get(ANNOTATION_KEY) != scope.key or seen.get(ANNOTATION_FINGERPRINT) != digest:
        raise ApiError(
            422,
            f"{HEADER} {scope.key!r} was already used for import {name!r} with another "
            "request (a different file, file name, form field or catalog); send a new "
            "key for a new upload",
            code="idempotency_key_reused",
            meta={"import": name},
        )
    return existing
