"""Incomplete multipart uploads in the upload bucket: aborted by a bucket lifecycle rule
where the store takes one, and by a sweep when the API starts.

An API process that dies mid-upload (a Pod evicted, a node lost) cannot abort its
multipart upload: the parts stay stored, invisible to object listings, for ever unless
something aborts them. Uploads are aborted only once older than
`abort_incomplete_uploads_after_seconds`, so another replica's upload in flight is left
alone.

What the MinIO pinned here does (measured against it, devenv/versions.env; its source
agrees):
- it refuses a lifecycle configuration holding AbortIncompleteMultipartUpload
  (`InvalidArgument`: "The XML you provided was not well-formed...": the element is not
  in its lifecycle model), and instead aborts every upload older than its own
  `api stale_uploads_expiry` (24 h), looking every `stale_uploads_cleanup_interval` (6 h);
- ListMultipartUploads without a prefix answers from an in-memory list of the uploads
  begun on that node since it started; with a prefix, only the uploads of the object of
  exactly that name. So the sweep lists the whole bucket, and an upload begun before
  MinIO last restarted is left to MinIO's own expiry.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta

from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.datatypes import Upload
from minio.error import S3Error
from minio.lifecycleconfig import AbortIncompleteMultipartUpload, LifecycleConfig, Rule

log = logging.getLogger(__name__)

RULE_ID = "productimport-abort-incomplete-uploads"
DAY_SECONDS = 24 * 3600


def ensure_abort_rule(client: Minio, bucket: str, max_age_seconds: float) -> bool:
    """Add (or correct) our rule in the bucket's lifecycle configuration, keeping the
    other rules. False when the store refuses it (MinIO does) or the credentials may not
    read or write the configuration: the sweep is then all there is."""
    days = max(1, math.ceil(max_age_seconds / DAY_SECONDS))  # a rule counts whole days
    try:
        config = client.get_bucket_lifecycle(bucket)
        others = [r for r in (config.rules if config else []) if r.rule_id != RULE_ID]
        ours = [r for r in (config.rules if config else []) if r.rule_id == RULE_ID]
        abort = ours[0].abort_incomplete_multipart_upload if ours else None
        if ours and ours[0].status == ENABLED and abort and abort.days_after_initiation == days:
            return True
        rule = Rule(
            ENABLED,
            rule_filter=Filter(prefix=""),
            rule_id=RULE_ID,
            abort_incomplete_multipart_upload=AbortIncompleteMultipartUpload(days),
        )
        client.set_bucket_lifecycle(bucket, LifecycleConfig([*others, rule]))
    except S3Error as exc:
        log.info(
            "the object store keeps no rule to abort incomplete multipart uploads in "
            "bucket %s (%s: %s); they are aborted when the API starts, once older than "
            "%.0f s (MinIO aborts them itself after its api stale_uploads_expiry)",
            bucket,
            exc.code,
            exc.message,
            max_age_seconds,
        )
        return False
    log.info("bucket %s: incomplete multipart uploads are aborted after %d day(s)", bucket, days)
    return True


def incomplete_uploads(client: Minio, bucket: str) -> list[Upload]:
    """Every incomplete multipart upload the store lists in the bucket, all pages."""
    uploads: list[Upload] = []
    key_marker: str | None = None
    upload_id_marker: str | None = None
    while True:
        page = client._list_multipart_uploads(
            bucket, key_marker=key_marker, upload_id_marker=upload_id_marker
        )
        uploads.extend(page.uploads)
        if not page.is_truncated or not page.uploads:
            return uploads
        # minio 7.2 reads NextUploadIdMarker into a misspelt attribute; the last upload
        # of the page is the same marker.
        key_marker, upload_id_marker = page.uploads[-1].object_name, page.uploads[-1].upload_id


def sweep(
    client: Minio, bucket: str, max_age_seconds: float, now: datetime | None = None
) -> list[str]:
    """Abort the bucket's incomplete multipart uploads begun more than `max_age_seconds`
    before `now`; returns their object keys."""
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=max_age_seconds)
    aborted: list[str] = []
    for upload in incomplete_uploads(client, bucket):
        if upload.initiated_time is None or upload.initiated_time > cutoff:
            continue
        try:
            client._abort_multipart_upload(bucket, upload.object_name, upload.upload_id)
        except S3Error as exc:
            if exc.code != "NoSuchUpload":  # finished or aborted meanwhile: nothing to do
                raise
            continue
        log.info(
            "aborted the incomplete multipart upload of s3://%s/%s begun %s",
            bucket,
            upload.object_name,
            upload.initiated_time.isoformat(),
        )
        aborted.append(upload.object_name)
    return aborted


def clean_up(client: Minio, bucket: str, max_age_seconds: float) -> None:
    """At API start: the lifecycle rule, then the sweep. Neither keeps the API from
    starting: an upload left now is aborted at the next start (or by the store)."""
    try:
        ensure_abort_rule(client, bucket, max_age_seconds)
        aborted = sweep(client, bucket, max_age_seconds)
    except S3Error as exc:
        # The API's MinIO user needs s3:ListBucketMultipartUploads and
        # s3:AbortMultipartUpload on the bucket for this.
        log.warning(
            "could not sweep incomplete multipart uploads in bucket %s (%s: %s)",
            bucket,
            exc.code,
            exc.message,
        )
        return
    except Exception:
        log.exception("could not sweep incomplete multipart uploads in bucket %s", bucket)
        return
    if aborted:
        log.info("aborted %d incomplete multipart upload(s) in bucket %s", len(aborted), bucket)
