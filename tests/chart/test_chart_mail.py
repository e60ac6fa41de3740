"""The chart's mail settings (operator.smtp.*): the operator's SMTP environment, its
password from an existing Secret, the API's PRODUCTIMPORT_API_EMAIL_ENABLED from the same
values, and the API's right to read a namespace's notify-email annotation, asked of the
API server itself."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import CHART
from test_chart import env_of, render, the

SMTP = {
    "host": "smtp.example.com",
    "port": 2525,
    "starttls": False,
    "sender": "imports@example.com",
    "username": "importer",
    "existingSecret": "smtp-login",
    "existingSecretKey": "pass",
    "apiUrl": "https://imports.example.com",
}


def containers(docs: list[dict[str, Any]], release: str = "pi") -> tuple[dict, dict]:
    def container(name: str) -> dict[str, Any]:
        deployment = the(docs, "Deployment", f"{release}-productimport-{name}")
        return deployment["spec"]["template"]["spec"]["containers"][0]

    return container("operator"), container("api")


def test_without_a_host_nothing_is_sent_and_the_api_refuses_notify_email(
    helm: Path, tmp_path: Path
) -> None:
    docs = render(helm, tmp_path)
    operator, api = containers(docs)
    assert not [k for k in env_of(operator) if "SMTP" in k]
    assert env_of(api)["PRODUCTIMPORT_API_EMAIL_ENABLED"] == "false"


def test_smtp_values_reach_the_operator_and_the_api(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {"operator": {"smtp": SMTP}})
    operator, api = containers(docs)
    env = env_of(operator)
    assert env["PRODUCTIMPORT_OPERATOR_SMTP_HOST"] == "smtp.example.com"
    assert env["PRODUCTIMPORT_OPERATOR_SMTP_PORT"] == "2525"
    assert env["PRODUCTIMPORT_OPERATOR_SMTP_STARTTLS"] == "false"
    assert env["PRODUCTIMPORT_OPERATOR_SMTP_SENDER"] == "imports@example.com"
    assert env["PRODUCTIMPORT_OPERATOR_SMTP_USERNAME"] == "importer"
    assert env["PRODUCTIMPORT_OPERATOR_API_URL"] == "https://imports.example.com"
    # The password only ever from the Secret the administrator manages.
    assert env["PRODUCTIMPORT_OPERATOR_SMTP_PASSWORD"] == {
        "secretKeyRef": {"name": "smtp-login", "key": "pass"}
    }
    assert env_of(api)["PRODUCTIMPORT_API_EMAIL_ENABLED"] == "true"
    # STARTTLS is on unless turned off.
    docs = render(helm, tmp_path, {"operator": {"smtp": {"host": "h", "sender": "a@b.c"}}})
    env = env_of(containers(docs)[0])
    assert env["PRODUCTIMPORT_OPERATOR_SMTP_STARTTLS"] == "true"
    assert env["PRODUCTIMPORT_OPERATOR_SMTP_PORT"] == "587"
    assert "PRODUCTIMPORT_OPERATOR_SMTP_PASSWORD" not in env


@pytest.mark.parametrize(
    ("smtp", "complaint"),
    [
        ({"host": "smtp.example.com"}, "operator.smtp.sender is required"),
        ({"host": "h", "sender": "a@b.c", "username": "u"}, "needs operator.smtp.existingSecret"),
    ],
)
def test_incomplete_smtp_values_are_refused(
    helm: Path, tmp_path: Path, smtp: dict[str, Any], complaint: str
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"operator": {"smtp": smtp}}))
    done = subprocess.run(
        [str(helm), "template", "pi", str(CHART), "-f", str(values)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert complaint in done.stderr


def _can(cluster: Any, who: str, verb: str, what: str) -> bool:
    done = cluster.kubectl("auth", "can-i", verb, what, f"--as={who}", check=False)
    assert done.stdout.strip() in ("yes", "no"), done.stderr
    return done.stdout.strip() == "yes"


@pytest.mark.cluster
@pytest.mark.parametrize("namespaced", [False, True], ids=["cluster-wide", "namespaced"])
def test_the_api_may_read_the_watched_namespaces_and_nothing_more_of_them(
    cluster: Any, helm: Path, tmp_path: Path, namespaced: bool
) -> None:
    home, shop, other = (cluster.namespace(p) for p in ("chart", "shop", "other"))
    release = f"m{uuid.uuid4().hex[:6]}"
    # Workspaces are checked before an upload's body is read, and a namespace may carry
    # its mail address: the API reads namespaces whether or not mail is configured.
    values: dict[str, Any] = {"operator": {}}
    if namespaced:
        values["operator"]["watchNamespaces"] = [shop]
    kinds = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
    docs = [d for d in render(helm, tmp_path, values, release=release, namespace=home)
            if d["kind"] in kinds]  # fmt: skip
    manifest = yaml.safe_dump_all(docs)
    cluster.kubectl("apply", "-f", "-", input=manifest)
    try:
        api = f"system:serviceaccount:{home}:{release}-productimport-api"
        assert _can(cluster, api, "get", f"namespaces/{shop}")
        assert _can(cluster, api, "get", f"namespaces/{other}") is not namespaced
        assert not _can(cluster, api, "list", "namespaces")
        assert not _can(cluster, api, "patch", f"namespaces/{shop}")
    finally:
        cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-",
                        input=manifest, check=False)  # fmt: skip
