"""Where an import's error report is, following docs/loader-contract.md.

`{prefix}{namespace}/{catalog}/imports/{importId}/errors.csv` and `errors.json` in the
catalog bucket; the import id is the ProductImport's UID. `status.errorsRef`, when the
operator has set it, names the CSV and wins.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from minio import Minio

from productimport.api.settings import ApiSettings
from productimport.api.storage import open_object, parse_s3_ref, read_object
from productimport.api.views import ImportView


def report_location(settings: ApiSettings, imp: ImportView, kind: str) -> tuple[str, str]:
    """(bucket, key) of errors.csv or errors.json for the import."""
    if imp.errors_ref and imp.errors_ref.startswith("s3://"):
        bucket, key = parse_s3_ref(imp.errors_ref)
        base = key.rsplit("/", 1)[0]
        return bucket, f"{base}/errors.{kind}"
    prefix = settings.catalog_prefix.strip("/")
    prefix = f"{prefix}/" if prefix else ""
    return (
        settings.catalog_bucket,
        f"{prefix}{imp.namespace}/{imp.catalog}/imports/{imp.uid}/errors.{kind}",
    )


async def open_report(client: Minio, settings: ApiSettings, imp: ImportView, kind: str) -> Any:
    bucket, key = report_location(settings, imp, kind)
    return await anyio.to_thread.run_sync(open_object, client, bucket, key)


async def load_error_records(
    client: Minio, settings: ApiSettings, imp: ImportView
) -> list[dict[str, Any]]:
    bucket, key = report_location(settings, imp, "json")
    data = await anyio.to_thread.run_sync(read_object, client, bucket, key)
    if not data:
        return []
    records = json.loads(data)
    return records if isinstance(records, list) else []
