"""Tenant isolation, attacked as a tenant would: an editor of namespace A (the built-in
`edit` role, which reads Secrets and creates ProductImports) against namespace B's
uploads and catalog, on the running system (API server, MinIO, operator, loader Pods).
"""

from __future__ import annotations

import base64
import contextlib
import io
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from imports_support import (
    MAGENTO,
    apply,
    finished,
    get,
    jobs_of,
    products_csv,
    running_loader,
    upload,
)
from kubernetes import client as k8s
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import S3Error

from devenv.component import DevEnvError
from devenv.node import freeze
from devenv.pki import Pki
from devenv.waiting import wait_for
from productimport.engine.s3store import table_bucket
from productimport.operator.reconcile import LEGACY_SHARED_SECRET

pytestmark = pytest.mark.cluster

GROUP, VERSION = "catalog.productimport.dev", "v1alpha1"
CHART = Path(__file__).resolve().parents[2] / "charts" / "productimport"


@dataclass
class Tenants:
    a: str
    b: str
    b_upload: str  # the key of B's uploaded file
    editor: k8s.ApiClient  # A's editor: the `edit` ClusterRole in A, nothing else


@pytest.fixture(scope="module")
def tenants(cluster, minio) -> Tenants:
    a, b = cluster.namespace("tenant-a"), cluster.namespace("tenant-b")
    source = upload(minio, b, MAGENTO)
    apply(cluster, "b-import", b, source)
    assert finished(cluster, "b-import", b)["status"]["phase"] == "Succeeded"
    cluster.kubectl("create", "serviceaccount", "editor", "-n", a)
    cluster.kubectl("create", "rolebinding", "editor", "-n", a, "--clusterrole=edit",
                    f"--serviceaccount={a}:editor")  # fmt: skip
    # What the chart aggregates into `edit` (its edit role; no chart is installed here).
    cluster.kubectl("create", "role", "productimport-edit", "-n", a,
                    "--verb=create,get,list,watch",
                    "--resource=productimports.catalog.productimport.dev")  # fmt: skip
    cluster.kubectl("create", "rolebinding", "productimport-edit", "-n", a,
                    "--role=productimport-edit", f"--serviceaccount={a}:editor")  # fmt: skip
    token = cluster.kubectl("create", "token", "editor", "-n", a).stdout.strip()
    config = k8s.Configuration()
    config.host = cluster.devenv.layout.apiserver_url
    config.ssl_ca_cert = str(Pki(cluster.devenv.layout.sub("pki")).ca_cert)
    config.api_key = {"authorization": f"Bearer {token}"}
    return Tenants(a, b, source["key"], k8s.ApiClient(config))


LOG = "products/_delta_log/"


def _table(namespace: str, catalog: str = "main") -> str:
    """The bucket of a catalog's Delta table (the dev store is s3://catalog)."""
    return table_bucket("catalog", "", namespace, catalog)


def _pointer(minio: Minio, tenants: Tenants) -> list[tuple[str, str]]:
    """B's catalog as of now: its table's log entries and their ETags."""
    log = minio.list_objects(_table(tenants.b), prefix=LOG)
    return [(o.object_name, o.etag) for o in log]


def _denied(attempt: Callable[[], object]) -> None:
    with pytest.raises(S3Error) as caught:
        attempt()
    assert caught.value.code == "AccessDenied", caught.value


def test_the_credentials_an_editor_can_read_open_nothing_of_another_tenant(cluster, minio, tenants):
    a, b = tenants.a, tenants.b
    before = _pointer(minio, tenants)
    # What versions before 0.2 left in every import namespace: the operator's own keys.
    cluster.kubectl("create", "secret", "generic", LEGACY_SHARED_SECRET, "-n", a,
                    "--from-literal=MINIO_ACCESS_KEY=old")  # fmt: skip
    # A running import, so that A holds an import's credentials while the editor looks.
    apply(cluster, "a-import", a, upload(minio, a, products_csv(300_000)))
    loader = wait_for("A's loader", lambda: running_loader(cluster, a))
    freeze(loader, True)
    try:
        secrets = k8s.CoreV1Api(tenants.editor).list_namespaced_secret(a).items
        found = [
            {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}
            for s in secrets
            if "MINIO_SECRET_KEY" in (s.data or {})
        ]
        # The premise: the editor reads the import's credentials (and nothing older).
        assert len(found) == 1, [s.metadata.name for s in secrets]
        assert LEGACY_SHARED_SECRET not in {s.metadata.name for s in secrets}
        creds = found[0]
        stolen = Minio(
            creds["MINIO_ENDPOINT"], creds["MINIO_ACCESS_KEY"], creds["MINIO_SECRET_KEY"],
            session_token=creds["MINIO_SESSION_TOKEN"], region=creds["MINIO_REGION"],
            secure=False,
        )  # fmt: skip
        # The premise: they may list their own catalog's table (empty until it commits).
        list(stolen.list_objects(_table(a), prefix=LOG))
        b_table, b_entry = _table(b), f"{LOG}{1:020d}.json"
        _denied(lambda: stolen.get_object(b_table, b_entry).read())
        _denied(lambda: stolen.stat_object(b_table, b_entry))
        _denied(lambda: list(stolen.list_objects(b_table, prefix=LOG)))
        _denied(lambda: stolen.get_object("uploads", tenants.b_upload).read())
        # B's next version, planted: a commit is a PUT of the next log entry.
        evil = io.BytesIO(b'{"commitInfo": {}}')
        _denied(lambda: stolen.put_object(b_table, f"{LOG}{99:020d}.json", evil, 18))
        _denied(lambda: stolen.put_object("uploads", f"{b}/planted.csv", io.BytesIO(b"x"), 1))
        _denied(lambda: list(stolen.list_objects("catalog", recursive=True)))
        _denied(lambda: list(stolen.list_objects("uploads", prefix=f"{b}/", recursive=True)))
        # MinIO's prefix-condition hole (docs/security.md) needs a listing right on a
        # shared bucket: a header naming A's own prefix opens nothing here.
        _denied(
            lambda: stolen._url_open(  # a raw signed request, with the header
                "GET", "us-east-1", bucket_name="catalog",
                query_params={"list-type": "2"}, headers={"Prefix": f"{a}/main/"},
            )
        )  # fmt: skip
        # Copying B's object into A's own table (allowed to write) is still a read.
        own = "products/stolen"
        _denied(lambda: stolen.copy_object(_table(a), own, CopySource(b_table, b_entry)))
        # Another catalog of A itself is out of reach too: the credentials are per import.
        _denied(lambda: list(stolen.list_objects(_table(a, "other"), prefix=LOG)))
        _denied(lambda: stolen.get_object("catalog", f"{a}/other/imports/x/result.json").read())
    finally:
        with contextlib.suppress(OSError, DevEnvError):
            freeze(loader, False)
    status = finished(cluster, "a-import", a)["status"]
    assert status["phase"] == "Succeeded", status  # the scoped credentials suffice
    assert _pointer(minio, tenants) == before
    # The import's credentials are gone with its end.
    left = k8s.CoreV1Api(tenants.editor).list_namespaced_secret(a).items
    assert not [s for s in left if "MINIO_SECRET_KEY" in (s.data or {})]


@pytest.mark.parametrize(
    "source",
    [
        lambda t: {"bucket": "catalog", "key": f"{t.b}/main/imports/x/result.json"},
        lambda t: {"bucket": _table(t.b), "key": f"{LOG}{1:020d}.json"},
        lambda t: {"bucket": "uploads", "key": t.b_upload},
        lambda t: {"bucket": "uploads", "key": f"{t.a}/../{t.b_upload}"},
        lambda t: {"bucket": "uploads", "key": f"{t.a}/*"},
    ],
    ids=["other-catalog", "other-table", "other-upload", "dot-dot", "wildcard"],
)
def test_an_import_of_another_tenants_object_is_refused_and_changes_nothing(
    cluster, minio, tenants, source, request
):
    """The confused deputy: only `create productimports` is needed to ask the loader to
    read any object. The operator refuses it before any credential or Job exists."""
    a = tenants.a
    before = _pointer(minio, tenants)
    name = f"deputy-{request.node.callspec.id}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ProductImport",
        "metadata": {"name": name},
        "spec": {"catalog": "loot", "source": {"object": source(tenants)}},
    }  # fmt: skip
    k8s.CustomObjectsApi(tenants.editor).create_namespaced_custom_object(
        GROUP, VERSION, a, "productimports", body
    )
    status = finished(cluster, name, a)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "SourceNotAllowed", status
    assert f"under {a}/" in status["message"] or "may not contain" in status["message"]
    assert not [j for j in jobs_of(cluster, a) if j["metadata"]["name"].startswith(name)]
    assert _pointer(minio, tenants) == before
    assert get(cluster, "pi", name, a)["status"].get("catalogVersion") in (None, 0)


@pytest.fixture
def admission_policy(cluster, tenants) -> Iterator[str]:
    """The chart's ValidatingAdmissionPolicy, rendered by helm and bound only to tenant A
    (by a label), so the operator's own check stays visible to the test above."""
    label = f"productimport-test-admission={tenants.a}"
    cluster.kubectl("label", "namespace", tenants.a, label, "--overwrite")
    key, value = label.split("=")
    rendered = subprocess.run(
        [
            str(cluster.devenv.bin_dir / "helm"), "template", "t", str(CHART),
            "--show-only", "templates/admission-policy.yaml",
            "--set", f"admission.namespaceSelector.matchLabels.{key}={value}",
            "--set", f"nameOverride=adm-{tenants.a}",
        ],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=rendered)
    try:
        yield rendered
    finally:
        cluster.kubectl("delete", "-f", "-", "--ignore-not-found", input=rendered)
        cluster.kubectl("label", "namespace", tenants.a, f"{key}-")


def test_admission_refuses_another_tenants_object_before_anything_is_stored(
    cluster, minio, tenants, admission_policy
):
    """With the chart's policy, `kubectl apply` itself fails: no ProductImport exists to
    be reconciled. The namespace's own uploads are still accepted."""
    a = tenants.a
    api = k8s.CustomObjectsApi(tenants.editor)

    def create(name: str, source: dict) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ProductImport",
            "metadata": {"name": name}, "spec": {"catalog": "loot", "source": {"object": source}},
        }  # fmt: skip
        api.create_namespaced_custom_object(GROUP, VERSION, a, "productimports", body)

    foreign = {"bucket": _table(tenants.b), "key": f"{LOG}{1:020d}.json"}

    def refused() -> str | None:  # the policy takes a moment to be loaded
        try:
            create("probe", foreign)
        except k8s.ApiException as exc:
            return exc.body if exc.status in (403, 422) else None
        cluster.kubectl("delete", "pi", "probe", "-n", a, "--wait=false")
        return None

    message = wait_for("the admission policy to apply", refused, timeout=60)
    assert f"under {a}/" in message and "ValidatingAdmissionPolicy" in message, message
    for name, source in {
        "other-upload": {"bucket": "uploads", "key": tenants.b_upload},
        "dot-dot": {"bucket": "uploads", "key": f"{a}/../{tenants.b_upload}"},
        "wildcard": {"bucket": "uploads", "key": f"{a}/*"},
    }.items():
        with pytest.raises(k8s.ApiException) as caught:
            create(name, source)
        assert caught.value.status in (403, 422), caught.value
    assert get(cluster, "pi", "dot-dot", a) is None
    # Its own upload passes admission and imports.
    create("own", upload(minio, a, MAGENTO))
    assert finished(cluster, "own", a)["status"]["phase"] == "Succeeded"
