"""The one upload flow behind all three API surfaces.

Stream the form's file into MinIO under a generated key, check the declared format
against the first bytes, then create the ProductImport. Any failure on the way aborts
the multipart upload (or deletes the finished object): no orphan object, no resource.
The object is deleted only once the resource is known not to exist: a create whose
answer was lost is asked again (resources.ProductImports.create_named), and an object
that a resource may point to is kept. With an Idempotency-Key (idempotency.py) a retry
is answered with the first request's resource and its body is not stored again.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request

from productimport import egress
from productimport.api import idempotency
from productimport.api.auth import EMAIL_PATTERN, Principal
from productimport.api.context import current_request_id
from productimport.api.errors import ApiError
from productimport.api.formstream import Limits, Sink, Upload, receive_upload
from productimport.api.resources import CreateOutcomeUnknown
from productimport.api.services import Services
from productimport.api.sniff import FormatError, check_format
from productimport.api.storage import MultipartWriter
from productimport.models.resource import (
    ANNOTATION_FILENAME,
    ANNOTATION_NOTIFY_EMAIL,
    ANNOTATION_REQUEST_ID,
    ANNOTATION_UPLOADED_BY,
    GROUP,
    KIND,
    LABEL_API,
    LABEL_CATALOG,
    VERSION,
)

log = logging.getLogger(__name__)

# On a Namespace, set by an administrator: where mail about the namespace's imports goes
# when the caller's token names no address (a static token's `email`; Kubernetes auth
# mode has none at all). On a ProductImport the same key says whether mail was asked for
# ("true"/"false"), and spec.notify.email says where it goes.
NAMESPACE_NOTIFY_EMAIL = ANNOTATION_NOTIFY_EMAIL


@dataclass
class UploadRequest:
    """What the client asked for, read from the form fields once the stream has ended
    (fields may follow the file in the body)."""

    format: str | None = None
    preset: str | None = None
    mode: str | None = None
    dry_run: bool = False
    notify_email: bool | None = None
    # Where that mail goes (spec.notify.email): the client's own address (the native
    # route's notifyEmail), else resolved by upload_and_create.
    notify_address: str | None = None
    # The form field that asked for mail, as the refusals name it.
    notify_field: str = "notify_email"
    # spec.notify.webhook (the native route's notifyWebhook), checked by check_webhook.
    notify_webhook: str | None = None
    extra_annotations: dict[str, str] = field(default_factory=dict)


def object_key(namespace: str, catalog: str, now: datetime) -> str:
    # Generated, never the client's file name: no path tricks, no collisions.
    return f"{namespace}/{catalog}/{now:%Y/%m/%d}/{uuid.uuid4()}.upload"


# The API server's generateName alphabet (no vowels, so no words), three more letters
# of it: the name is chosen here, so that a create whose answer was lost can be sent
# again, and its object read, under the same name.
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# Draws of a generated name before giving up on finding a free one (27^8 names).
_NAME_ATTEMPTS = 3


def resource_name(catalog: str) -> str:
    return f"{catalog[:40]}-" + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(8))


def _annotation_safe(text: str, limit: int = 253) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:limit]


def build_resource(
    name: str,
    namespace: str,
    catalog: str,
    api: str,
    bucket: str,
    key: str,
    fmt: str,
    options: UploadRequest,
    upload: Upload,
    principal: Principal,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "catalog": catalog,
        "source": {"object": {"bucket": bucket, "key": key}},
        "format": fmt,
        "dryRun": options.dry_run,
    }
    if options.preset:
        spec["preset"] = options.preset
    if options.mode:
        spec["mode"] = options.mode
    notify: dict[str, str] = {}
    if options.notify_email and options.notify_address:
        notify["email"] = options.notify_address
    if options.notify_webhook:
        notify["webhook"] = options.notify_webhook
    if notify:
        spec["notify"] = notify
    annotations = {
        ANNOTATION_REQUEST_ID: current_request_id(),
        ANNOTATION_UPLOADED_BY: _annotation_safe(principal.name),
        **options.extra_annotations,
    }
    if upload.filename:
        annotations[ANNOTATION_FILENAME] = _annotation_safe(upload.filename)
    if options.notify_email is not None:
        annotations[ANNOTATION_NOTIFY_EMAIL] = str(options.notify_email).lower()
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {LABEL_CATALOG: catalog, LABEL_API: api},
            "annotations": annotations,
        },
        "spec": spec,
    }


async def _namespace_address(svc: Services, namespace: str) -> str | None:
    """The address in the Namespace's annotation, or None."""
    ns = await svc.imports.namespaces.read(namespace)
    if ns is None:
        raise ApiError(404, f"namespace {namespace!r} does not exist", code="not_found")
    value = ((ns.metadata.annotations or {}).get(NAMESPACE_NOTIFY_EMAIL) or "").strip()
    if not value:
        return None
    if len(value) > 254 or not EMAIL_PATTERN.match(value):
        raise ApiError(
            422,
            f"notify_email: the annotation {NAMESPACE_NOTIFY_EMAIL} of namespace "
            f"{namespace!r} is not one mail address; ask an administrator to correct it",
            code="invalid_notify_address",
        )
    return value


async def notify_address(
    svc: Services,
    principal: Principal,
    namespace: str,
    explicit: str | None = None,
    field: str = "notify_email",
) -> str:
    """Where mail about an import goes: the address the client named (`explicit`, the
    native route's notifyEmail=ADDRESS), else for `true` the caller's token's address,
    else the namespace's (annotation NAMESPACE_NOTIFY_EMAIL). A 422 when this
    installation sends no mail or there is no address: accepting the flag and sending
    nothing would be worse than saying no."""
    asked = f"{field}={explicit or 'true'}"
    if not svc.settings.email_enabled:
        raise ApiError(
            422,
            f"{asked}, but this installation sends no mail (the operator has no "
            f"SMTP server); leave {field} out or set it to false",
            code="email_not_configured",
        )
    if explicit:
        return explicit
    if principal.email:
        return principal.email
    address = await _namespace_address(svc, namespace)
    if address:
        return address
    # The SaaS flag is a boolean; the native field also takes the address itself.
    name_one = "" if field == "notify_email" else "name an address, or "
    raise ApiError(
        422,
        f"{asked}, but there is no address to send to: {principal.name!r} has "
        f"none configured and namespace {namespace!r} has no {NAMESPACE_NOTIFY_EMAIL} "
        f"annotation (set by an administrator); {name_one}leave {field} out or set it "
        "to false",
        code="no_notify_address",
    )


@functools.cache
def egress_settings() -> egress.EgressSettings:
    """The outbound policy, from the same PRODUCTIMPORT_EGRESS_* variables the operator
    delivers webhooks under (read once)."""
    return egress.EgressSettings()


def check_webhook(url: str, settings: egress.EgressSettings, field: str = "notifyWebhook") -> str:
    """Refuse, with 422 at upload, a webhook the operator's egress policy would refuse at
    delivery for certain: a scheme other than https (http only where the policy allows
    it), no host, credentials in the URL (the spec is readable by everyone who may read
    the import), or a literal address that is not public and that no rule allows. A host
    name is resolved and checked when the operator connects (productimport/egress.py),
    not here: DNS may answer differently then."""

    def refuse(why: str) -> ApiError:
        return ApiError(422, f"{field} {url!r}: {why}", code="invalid_webhook")

    if any(c.isspace() or not c.isprintable() for c in url):
        raise refuse("a URL has no spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise refuse(f"not a URL ({exc})") from exc
    schemes = ("https", "http") if settings.allow_http else ("https",)
    if parts.scheme not in schemes or not url.startswith(f"{parts.scheme}://"):
        raise refuse(f"only {' or '.join(s + '://' for s in schemes)} URLs are allowed")
    if not parts.hostname:
        raise refuse("no host")
    if parts.username is not None or parts.password is not None:
        raise refuse(
            "credentials in the URL would be readable in the ProductImport's spec; "
            "verify the X-ProductImport-Signature header instead (docs/operations.md)"
        )
    if parts.fragment:
        raise refuse("a fragment is never sent; leave it out")
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return url  # a host name: checked on the address it resolves to, at delivery
    port = port or (443 if parts.scheme == "https" else 80)
    if not egress.is_allowed(address, port, settings.allow):
        raise refuse(
            f"{address} is not a public address; the operator would refuse to post to it "
            "(an administrator can allow it: egress.allow in the chart's values)"
        )
    return url


@dataclass
class Accepted:
    """What an upload came to: the ProductImport, and whether it is the one an earlier
    request with the same Idempotency-Key made (this request stored nothing)."""

    obj: dict[str, Any]
    replayed: bool = False


def _source_is(obj: dict[str, Any], bucket: str, key: str) -> bool:
    source = (obj.get("spec") or {}).get("source") or {}
    return source.get("object") == {"bucket": bucket, "key": key}


async def upload_and_create(
    svc: Services,
    request: Request,
    principal: Principal,
    *,
    namespace: str,
    catalog: str,
    api: str,
    limits: Limits,
    read_options: Callable[[dict[str, str]], UploadRequest],
    format_status: dict[int, int] | None = None,
    refine_error: Callable[[ApiError], ApiError] | None = None,
    idempotency_key: str | None = None,
) -> Accepted:
    """Returns the created ProductImport (or, for an Idempotency-Key seen before, the
    one it made). `format_status` remaps the 415/422 of the format check,
    `refine_error` any refusal, for surfaces with their own status codes."""
    settings = svc.settings
    bucket = settings.upload_bucket
    key = object_key(namespace, catalog, datetime.now(UTC))
    metrics = svc.metrics
    metrics.uploads_in_progress.inc()
    fingerprint = idempotency.Fingerprint()
    writer: MultipartWriter | None = None
    # The object is (or may be) a ProductImport's source: never delete it then.
    stored = False
    try:
        scope = idempotency.scope(api, namespace, idempotency_key)
        # A key seen before: its resource is the answer, and the body is only hashed to
        # check that it is the same request.
        earlier = await svc.imports.find(namespace, scope.resource_name) if scope else None
        if earlier is None:
            writer = MultipartWriter(
                svc.minio,
                svc.part_pool,
                bucket,
                key,
                part_size=settings.part_size,
                parts_in_flight=settings.parts_in_flight,
            )
        # Hashing costs CPU on every byte: only where a key asks for it.
        sink: Sink | None = fingerprint.sink(writer) if scope else writer

        async def open_sink() -> Sink:
            assert sink is not None
            return sink

        upload = await receive_upload(request, limits, open_sink)
        options = read_options(upload.fields)
        digest = fingerprint.digest(catalog, upload)
        if scope and earlier is not None:
            accepted = Accepted(idempotency.replay(scope, digest, earlier), replayed=True)
        else:
            assert writer is not None
            try:
                fmt, _gz = check_format(options.format, upload.filename, upload.head)
            except FormatError as exc:
                status = (format_status or {}).get(exc.status, exc.status)
                raise ApiError(status, exc.detail, code="unsupported_format") from exc
            if options.notify_webhook:
                check_webhook(options.notify_webhook, egress_settings())
            if options.notify_email:
                options.notify_address = await notify_address(
                    svc,
                    principal,
                    namespace,
                    explicit=options.notify_address,
                    field=options.notify_field,
                )
            await writer.finish()
            name = scope.resource_name if scope else resource_name(catalog)
            body = build_resource(
                name, namespace, catalog, api, bucket, key, fmt, options, upload, principal
            )
            if scope:
                body["metadata"]["annotations"].update(idempotency.annotations(scope, digest))
            try:
                accepted = await _create(svc, namespace, catalog, body, bucket, key, scope, digest)
            except Exception:
                raise  # a refusal (nothing made), or CreateOutcomeUnknown (below)
            except BaseException:
                stored = True  # cancelled mid-create (the API stopping): it may exist
                raise
            stored = not accepted.replayed
    except ApiError as exc:
        # No definite answer from the API server: the resource may point at the object.
        stored = stored or isinstance(exc, CreateOutcomeUnknown)
        refined = refine_error(exc) if refine_error else exc
        metrics.uploads_rejected.labels(api, str(refined.status)).inc()
        if refined is exc:
            raise
        raise refined from exc
    finally:
        if writer is not None and not stored:
            await writer.abort()
        # After the cleanup: "in progress" ends when nothing of the upload is left to do.
        metrics.uploads_in_progress.dec()
    obj = accepted.obj
    if accepted.replayed:
        metrics.uploads_replayed.labels(api).inc()
        log.info(
            "Idempotency-Key %r: answered with %s/%s (uid %s), stored nothing",
            scope.key if scope else None,
            namespace,
            obj["metadata"]["name"],
            obj["metadata"]["uid"],
        )
        return accepted
    metrics.upload_bytes.labels(api).inc(upload.size)
    metrics.imports_created.labels(api).inc()
    log.info(
        "stored %d bytes at s3://%s/%s as %s; created %s/%s (uid %s)",
        upload.size,
        bucket,
        key,
        fmt,
        namespace,
        obj["metadata"]["name"],
        obj["metadata"]["uid"],
    )
    return accepted


async def _create(
    svc: Services,
    namespace: str,
    catalog: str,
    body: dict[str, Any],
    bucket: str,
    key: str,
    scope: idempotency.Scope | None,
    digest: str,
) -> Accepted:
    """Create the ProductImport whose source is `key`. Its name taken by another: with
    a key, that is the same key's resource from a concurrent request (the answer, or a
    422 for another request); without, a generated name drawn twice (draw again)."""
    for _ in range(_NAME_ATTEMPTS):
        obj = await svc.imports.create_named(namespace, body)
        if _source_is(obj, bucket, key):
            return Accepted(obj)
        if scope:
            return Accepted(idempotency.replay(scope, digest, obj), replayed=True)
        body["metadata"]["name"] = resource_name(catalog)
    raise ApiError(409, "no free name for the import; retry", code="conflict")
