"""The API's MinIO connection comes from the same MINIO_* settings as the operator's and
the loader's (one class), and a missing one is missing: no well-known default keys."""

from __future__ import annotations

import pytest

from productimport.api.settings import ApiSettings
from productimport.engine.objectstore import MinioSettings


def test_no_default_minio_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    minio = ApiSettings().minio
    assert (minio.access_key, minio.secret_key) == ("", "")


def test_the_api_reads_minio_like_the_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIO_ENDPOINT", "store.example:9000")
    monkeypatch.setenv("MINIO_ACCESS_KEY", "ak")
    monkeypatch.setenv("MINIO_SECRET_KEY", "sk")
    monkeypatch.setenv("MINIO_SECURE", "true")
    assert ApiSettings().minio == MinioSettings()
    assert ApiSettings().minio.endpoint == "store.example:9000" and ApiSettings().minio.secure
