"""The Helm chart (charts/productimport): lint, render, the API server's verdict on what
it renders, least-privilege RBAC asked of the API server itself, and a real install on
the local control plane that imports a file uploaded through the chart's own API.

The install runs the chart's Deployments as Pods of the image built from this checkout
(devenv/images.py) on the dev cluster's real kubelet: each Pod has its own network
namespace and reaches the API server through the `kubernetes` Service with its projected
service-account token, as in any cluster; the test uploads through the API's Service.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from chart_support import CHART, REPO

from devenv import images
from devenv.waiting import wait_for
from tests.shared_data import SHARED_DATA

DATA = SHARED_DATA
ELASTICPATH = DATA / "elasticpath-pcm" / "pim_product_import_example.csv"
GROUP = "catalog.productimport.dev"


def run(*argv: str | Path, input: str | None = None, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, input=input,
        timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, argv))} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def render(
    helm: Path, tmp_path: Path, values: dict[str, Any] | None = None, *,
    release: str = "pi", namespace: str = "productimport", crds: bool = False,
) -> list[dict[str, Any]]:  # fmt: skip
    path = tmp_path / f"values-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(values or {}))
    args = ["template", release, CHART, "-n", namespace, "-f", path]
    if crds:
        args.append("--include-crds")
    return [d for d in yaml.safe_load_all(run(helm, *args)) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        d for d in docs
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]  # fmt: skip


def the(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


NAMESPACED = {"operator": {"watchNamespaces": ["shop-a", "shop-b"]}}


# --- the chart's files ---------------------------------------------------------------------


def test_the_charts_crd_is_the_generated_crd() -> None:
    # crds/productimport.yaml is generated from the models; the chart ships a copy
    # (Helm installs only what is inside the chart): copy it again after regenerating.
    chart_crd = CHART / "crds" / "productimport.yaml"
    assert chart_crd.read_bytes() == (REPO / "crds" / "productimport.yaml").read_bytes(), (
        "charts/productimport/crds/productimport.yaml differs from crds/productimport.yaml: "
        "cp crds/productimport.yaml charts/productimport/crds/"
    )


@pytest.mark.parametrize(
    "values",
    [
        {},
        NAMESPACED,
        {
            "api": {
                "auth": {
                    "mode": "static",
                    "static": {"tokens": [{"name": "ci", "token": "t", "namespaces": ["shop-a"]}]},
                }
            }
        },
        {"minio": {"existingSecret": "mine"}, "serviceMonitor": {"enabled": True}},
    ],
    ids=["defaults", "namespaced", "static-auth", "existing-secret"],
)
def test_helm_lint_is_clean(helm: Path, tmp_path: Path, values: dict[str, Any]) -> None:
    path = tmp_path / "values.json"
    path.write_text(json.dumps(values))
    out = run(helm, "lint", "--strict", CHART, "-f", path)
    findings = [line for line in out.splitlines() if line.startswith(("[WARNING]", "[ERROR]"))]
    assert not findings, out
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_the_package_leaves_out_the_health_check_tests(helm: Path, tmp_path: Path) -> None:
    run(helm, "package", CHART, "-d", tmp_path)
    (archive,) = tmp_path.glob("productimport-*.tgz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "productimport/files/argocd-health.lua" in names
    assert "productimport/crds/productimport.yaml" in names
    assert not [n for n in names if "argocd-health-tests" in n], names


# --- what it renders -----------------------------------------------------------------------


def _pod_security(deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {v["name"]: v for v in pod["volumes"]}["tmp"]["emptyDir"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz", probe
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["automountServiceAccountToken"] is True


def test_default_render(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, tmp_path)
    operator = the(docs, "Deployment", "pi-productimport-operator")
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["productimport-operator"]
    assert container["image"] == "ghcr.io/productimport/productimport:0.1.0"
    env = env_of(container)
    assert env["PRODUCTIMPORT_OPERATOR_NAMESPACES"] == ""  # every namespace
    assert env["PRODUCTIMPORT_OPERATOR_IMAGE"] == container["image"]  # the loader's image
    assert json.loads(env["PRODUCTIMPORT_OPERATOR_LOADER_COMMAND"]) == ["productimport"]
    assert env["PRODUCTIMPORT_OPERATOR_STORE"] == "s3://catalog"
    # Watching every namespace there is no per-namespace loader account to name.
    assert "PRODUCTIMPORT_OPERATOR_LOADER_SERVICE_ACCOUNT" not in env
    assert env["MINIO_ACCESS_KEY"]["secretKeyRef"] == {
        "name": "pi-productimport-minio",
        "key": "MINIO_ACCESS_KEY",
    }
    _pod_security(operator)

    api = the(docs, "Deployment", "pi-productimport-api")
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["productimport-api"]
    env = env_of(container)
    assert env["PRODUCTIMPORT_API_AUTH_MODE"] == "kubernetes"
    assert env["PRODUCTIMPORT_API_PORT"] == "8080"
    assert "PRODUCTIMPORT_API_TOKENS" not in env
    _pod_security(api)
    service = the(docs, "Service", "pi-productimport-api")
    assert service["spec"]["ports"][0]["targetPort"] == "http"

    accounts = {d["metadata"]["name"] for d in find(docs, "ServiceAccount")}
    assert accounts == {"pi-productimport-operator", "pi-productimport-api"}
    assert not find(docs, "Role") and not find(docs, "ServiceMonitor")
    # MinIO's and the webhook signing key; no tokens in kubernetes auth mode.
    secrets = {d["metadata"]["name"] for d in find(docs, "Secret")}
    assert secrets == {"pi-productimport-minio", "pi-productimport-webhook"}
    (webhook,) = find(docs, "Secret", "pi-productimport-webhook")
    assert len(webhook["stringData"]["signingKey"]) == 48  # generated at install
    operator_env = env_of(operator["spec"]["template"]["spec"]["containers"][0])
    assert operator_env["PRODUCTIMPORT_OPERATOR_WEBHOOK_SIGNING_KEY"]["secretKeyRef"] == {
        "name": "pi-productimport-webhook",
        "key": "signingKey",
    }


def test_namespaced_render(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, NAMESPACED)
    operator = the(docs, "Deployment", "pi-productimport-operator")
    env = env_of(operator["spec"]["template"]["spec"]["containers"][0])
    assert env["PRODUCTIMPORT_OPERATOR_NAMESPACES"] == "shop-a,shop-b"
    assert env["PRODUCTIMPORT_OPERATOR_LOADER_SERVICE_ACCOUNT"] == "pi-productimport-loader"
    for ns in ("shop-a", "shop-b"):
        roles = {
            d["metadata"]["name"] for d in find(docs, "Role") if d["metadata"]["namespace"] == ns
        }
        assert roles == {"pi-productimport-operator", "pi-productimport-api"}, ns
        (loader,) = [
            d for d in find(docs, "ServiceAccount", "pi-productimport-loader")
            if d["metadata"]["namespace"] == ns
        ]  # fmt: skip
        assert loader["automountServiceAccountToken"] is False
    # Cluster-wide, the operator may only read CRDs and follow namespaces; the API may
    # only review tokens and access.
    operator_cr = the(docs, "ClusterRole", "productimport-pi-productimport-operator")
    assert {r["resources"][0] for r in operator_cr["rules"]} == {
        "customresourcedefinitions",
        "namespaces",
    }
    api_cr = the(docs, "ClusterRole", "productimport-pi-productimport-api")
    assert {r["resources"][0] for r in api_cr["rules"]} == {"tokenreviews", "subjectaccessreviews"}


@pytest.mark.parametrize("values", [{}, NAMESPACED], ids=["cluster-wide", "namespaced"])
def test_no_role_grants_wildcards_or_reading_secrets(
    helm: Path, tmp_path: Path, values: dict[str, Any]
) -> None:
    docs = render(helm, tmp_path, values)
    roles = find(docs, "ClusterRole") + find(docs, "Role")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
            if "secrets" in rule["resources"]:
                # Written, never read: an import's credentials go one way.
                assert not {"get", "list", "watch"} & set(rule["verbs"]), rule


def test_static_auth_and_existing_secrets(helm: Path, tmp_path: Path) -> None:
    tokens = [{"name": "ci", "token": "s3cr3t", "namespaces": ["shop-a"]}]
    docs = render(helm, tmp_path, {
        "api": {"auth": {"mode": "static", "static": {"tokens": tokens}}},
        "minio": {"existingSecret": "store-creds",
                  "existingSecretKeys": {"accessKey": "user", "secretKey": "password"}},
        "operator": {"webhook": {"existingSecret": "hook-key"}},
    })  # fmt: skip
    (secret,) = find(docs, "Secret")  # the MinIO one and the webhook key are the user's own
    assert yaml.safe_load(secret["stringData"]["tokens.yaml"]) == {"tokens": tokens}
    api = the(docs, "Deployment", "pi-productimport-api")
    env = env_of(api["spec"]["template"]["spec"]["containers"][0])
    assert env["PRODUCTIMPORT_API_AUTH_MODE"] == "static"
    assert env["PRODUCTIMPORT_API_TOKENS"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "tokens.yaml",
    }
    assert env["MINIO_SECRET_KEY"]["secretKeyRef"] == {"name": "store-creds", "key": "password"}
    operator = the(docs, "Deployment", "pi-productimport-operator")
    operator_env = env_of(operator["spec"]["template"]["spec"]["containers"][0])
    signing = operator_env["PRODUCTIMPORT_OPERATOR_WEBHOOK_SIGNING_KEY"]["secretKeyRef"]
    assert signing == {"name": "hook-key", "key": "signingKey"}
    # Static tokens: the API needs no TokenReview/SubjectAccessReview rights (it records
    # a rollback as an Event).
    api_cr = the(docs, "ClusterRole", "productimport-pi-productimport-api")
    assert {r["resources"][0] for r in api_cr["rules"]} == {"productimports", "events"}


def test_service_monitor_when_enabled(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {"serviceMonitor": {"enabled": True, "labels": {"r": "x"}}})
    monitor = the(docs, "ServiceMonitor", "pi-productimport")
    assert monitor["metadata"]["labels"]["r"] == "x"
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"http", "metrics"}
    ports = {p["name"] for s in find(docs, "Service") for p in s["spec"]["ports"]}
    assert ports == {"http", "metrics"}


def test_an_unknown_auth_mode_is_refused(helm: Path, tmp_path: Path) -> None:
    path = tmp_path / "values.json"
    path.write_text(json.dumps({"api": {"auth": {"mode": "none"}}}))
    done = subprocess.run(
        [str(helm), "template", "pi", str(CHART), "-f", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "api.auth.mode must be kubernetes or static" in done.stderr


# --- on the local control plane ----------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.parametrize("namespaced", [False, True], ids=["cluster-wide", "namespaced"])
def test_the_api_server_accepts_what_the_chart_renders(
    cluster: Any, helm: Path, tmp_path: Path, namespaced: bool
) -> None:
    home = cluster.namespace("chart")
    # The Pod Security Standard "restricted": the API server warns about every Pod
    # template that would not be admitted under it.
    cluster.kubectl("label", "namespace", home, "pod-security.kubernetes.io/warn=restricted")
    values: dict[str, Any] = {}
    if namespaced:
        values = {
            "operator": {"watchNamespaces": [cluster.namespace("shop"), cluster.namespace("shop")]}
        }
    docs = render(helm, tmp_path, values, namespace=home, crds=True)
    assert find(docs, "CustomResourceDefinition")
    manifest = yaml.safe_dump_all(docs)
    done = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("(server dry run)") == len(docs), done.stdout
    assert "would violate PodSecurity" not in done.stderr, done.stderr


RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")


@pytest.fixture
def rbac_only(cluster: Any, helm: Path, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Apply only the chart's accounts and roles (nothing runs), for real, so the API
    server can be asked what each account may do; removed again afterwards."""
    applied: list[str] = []

    def apply(values: dict[str, Any], namespace: str) -> str:
        release = f"r{uuid.uuid4().hex[:6]}"
        docs = render(helm, tmp_path, values, release=release, namespace=namespace)
        docs = [d for d in docs if d["kind"] in RBAC_KINDS]
        manifest = yaml.safe_dump_all(docs)
        cluster.kubectl("apply", "-f", "-", input=manifest)
        applied.append(manifest)
        return release

    yield apply
    for manifest in applied:
        cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-",
                        input=manifest, check=False)  # fmt: skip


def can(cluster: Any, who: str, verb: str, what: str, ns: str | None = None, sub: str = "") -> bool:
    args = ["auth", "can-i", verb, what, f"--as={who}"]
    args += ["-n", ns] if ns else []
    args += [f"--subresource={sub}"] if sub else []
    done = cluster.kubectl(*args, check=False)
    answer = done.stdout.strip()
    assert answer in ("yes", "no"), done.stderr
    return answer == "yes"


PI = f"productimports.{GROUP}"


@pytest.mark.cluster
@pytest.mark.parametrize("namespaced", [False, True], ids=["cluster-wide", "namespaced"])
def test_rbac_is_least_privilege(
    cluster: Any, rbac_only: Callable[..., str], namespaced: bool
) -> None:
    home, shop, other = (cluster.namespace(p) for p in ("chart", "shop", "other"))
    values = {"operator": {"watchNamespaces": [shop]}} if namespaced else {}
    release = rbac_only(values, home)
    sa = f"system:serviceaccount:{home}:{release}-productimport"
    operator, api = f"{sa}-operator", f"{sa}-api"

    # The operator: its ProductImports, their status and Jobs; the loaders' Secrets,
    # written and deleted, never read.
    assert can(cluster, operator, "watch", PI, shop)
    assert can(cluster, operator, "patch", PI, shop, sub="status")
    assert can(cluster, operator, "create", "jobs.batch", shop)
    assert can(cluster, operator, "delete", "jobs.batch", shop)
    assert can(cluster, operator, "list", "pods", shop)
    # Pods are listed by label, never watched or read by name.
    assert not can(cluster, operator, "watch", "pods", shop)
    assert not can(cluster, operator, "get", "pods", shop)
    assert can(cluster, operator, "create", "events", shop)
    assert can(cluster, operator, "create", "secrets", shop)
    assert can(cluster, operator, "delete", "secrets", shop)
    assert not can(cluster, operator, "get", "secrets", shop)
    assert not can(cluster, operator, "list", "secrets", shop)
    assert not can(cluster, operator, "get", "secrets/other", "kube-system")
    assert not can(cluster, operator, "delete", "namespaces")
    assert not can(cluster, operator, "delete", PI, shop)
    assert not can(cluster, operator, "create", "pods", shop)
    assert not can(cluster, operator, "create", "deployments.apps", shop)
    assert can(cluster, operator, "list", "customresourcedefinitions.apiextensions.k8s.io")
    assert not can(cluster, operator, "delete", "customresourcedefinitions.apiextensions.k8s.io")
    # Elsewhere: everything when watching every namespace, nothing when watching a list.
    assert can(cluster, operator, "create", "jobs.batch", other) is not namespaced
    assert can(cluster, operator, "patch", PI, other, sub="status") is not namespaced
    assert can(cluster, operator, "create", "secrets", other) is not namespaced
    # kopf follows namespaces only when given a list of them (see rbac-operator.yaml).
    assert can(cluster, operator, "watch", "namespaces") is namespaced

    # The API: ProductImports and the two reviews; nothing that runs anything.
    assert can(cluster, api, "create", PI, shop)
    assert can(cluster, api, "patch", PI, shop)
    assert can(cluster, api, "create", "tokenreviews.authentication.k8s.io")
    assert can(cluster, api, "create", "subjectaccessreviews.authorization.k8s.io")
    assert not can(cluster, api, "delete", PI, shop)
    assert not can(cluster, api, "create", "jobs.batch", shop)
    assert not can(cluster, api, "get", "secrets", shop)
    assert not can(cluster, api, "patch", PI, shop, sub="status")  # the operator's alone
    assert can(cluster, api, "create", PI, other) is not namespaced

    if namespaced:
        # The loader's account (in the import namespace): no token, no rights at all.
        account = json.loads(
            cluster.kubectl("get", "serviceaccount", f"{release}-productimport-loader",
                            "-n", shop, "-o", "json").stdout
        )  # fmt: skip
        assert account["automountServiceAccountToken"] is False
        loader = f"system:serviceaccount:{shop}:{release}-productimport-loader"
        for verb, what in [("get", PI), ("list", "pods"), ("create", "jobs.batch"),
                           ("get", "secrets"), ("list", "secrets"),
                           ("create", "tokenreviews.authentication.k8s.io"),
                           ("list", "namespaces")]:  # fmt: skip
            assert not can(cluster, loader, verb, what, shop), (verb, what)


# --- a real install --------------------------------------------------------------------------


def _pods_report(cluster: Any, ns: str) -> str:
    """What the Pods of `ns` look like, and the end of each container's log."""
    pods = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
    lines = []
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status") or {}
        lines.append(f"pod {meta['name']}: {status.get('phase')} "
                     f"{json.dumps(status.get('containerStatuses'))[:600]}")  # fmt: skip
        for container in pod["spec"]["containers"]:
            logs = cluster.kubectl("logs", "-n", ns, meta["name"], "-c", container["name"],
                                   "--tail=25", check=False)  # fmt: skip
            lines += [f"--- logs of {meta['name']}/{container['name']}", logs.stdout + logs.stderr]
    return "\n".join(lines) or f"(no pods in {ns})"


def _available(cluster: Any, ns: str, name: str) -> bool:
    done = cluster.kubectl("get", "deployment", name, "-n", ns, "-o", "json", check=False)
    if done.returncode != 0:
        return False
    return (json.loads(done.stdout).get("status") or {}).get("availableReplicas", 0) >= 1


@pytest.mark.cluster
@pytest.mark.parametrize("namespaced", [False, True], ids=["cluster-wide", "namespaced"])
def test_helm_install_imports_a_file_uploaded_through_the_charts_api(
    cluster: Any, helm: Path, tmp_path: Path, namespaced: bool
) -> None:
    home, tenant = cluster.namespace("chart"), cluster.namespace("tenant")
    release = "pi"
    fullname = f"{release}-productimport"
    repository, tag = images.product_ref().rsplit(":", 1)
    # The dev MinIO's credentials, as a platform team would hand them over: a Secret.
    creds = {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "store-credentials", "namespace": home},
        "stringData": {"MINIO_ACCESS_KEY": cluster.env["MINIO_ACCESS_KEY"],
                       "MINIO_SECRET_KEY": cluster.env["MINIO_SECRET_KEY"]},
    }  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=json.dumps(creds))
    values = {
        # The image built from this checkout, already on the node: nothing to pull.
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "minio": {"endpoint": cluster.env["MINIO_ENDPOINT"], "existingSecret": "store-credentials"},
        "operator": {"watchNamespaces": [tenant] if namespaced else []},
    }  # fmt: skip
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values))
    kubeconfig = f"--kubeconfig={cluster.kubeconfig}"

    # The dev environment's own operator watches every namespace: it would race the
    # chart's for the tenant's import. Stopped for this test, started again after it.
    cluster.devenv.sup.stop("operator")
    try:
        run(helm, kubeconfig, "install", release, CHART, "-n", home, "-f", values_file)
        for component in ("operator", "api"):
            wait_for(
                f"the chart's {component} Deployment to be available",
                lambda c=component: _available(cluster, home, f"{fullname}-{c}"),
                why=lambda: _pods_report(cluster, home),
            )

        # An uploader as NOTES.txt describes it: a ServiceAccount bound to the chart's
        # edit role in the tenant namespace, and a token for it.
        cluster.kubectl("create", "serviceaccount", "uploader", "-n", tenant)
        cluster.kubectl("create", "serviceaccount", "stranger", "-n", tenant)
        cluster.kubectl("create", "rolebinding", "uploader", "-n", tenant,
                        f"--clusterrole={home}-{fullname}-edit",
                        f"--serviceaccount={tenant}:uploader")  # fmt: skip

        def token_for(account: str, *audience: str) -> str:
            return cluster.kubectl("create", "token", account, "-n", tenant,
                                   *audience).stdout.strip()  # fmt: skip

        token = token_for("uploader", "--audience", "productimport")
        stranger = token_for("stranger", "--audience", "productimport")
        # The uploader's token as a Pod mounts it (for the API server): replayed to the
        # API it must not count, or any Pod's token would open the API (issue 12, 9).
        for_the_apiserver = token_for("uploader")

        # The API's Service, as a client inside the cluster would reach it (kube-proxy's
        # rules take the host's connection to a ready Pod).
        service = json.loads(
            cluster.kubectl("get", "service", f"{fullname}-api", "-n", home, "-o", "json").stdout
        )
        base = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
        url = f"{base}/api/v1/namespaces/{tenant}/catalogs/pcm/imports"

        def answers() -> bool:
            # Available Pods come first; the EndpointSlice and kube-proxy's rule follow
            # (until then the Service refuses connections).
            try:
                return httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for("the API's Service to answer", answers, why=lambda: _pods_report(cluster, home))

        def upload(bearer: str | None) -> httpx.Response:
            headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
            with ELASTICPATH.open("rb") as fh:
                return httpx.post(
                    url, headers=headers, data={"preset": "elasticpath"},
                    files={"file": (ELASTICPATH.name, fh, "text/csv")}, timeout=120,
                )  # fmt: skip

        assert upload(None).status_code == 401
        refused = upload(for_the_apiserver)
        assert refused.status_code == 401 and "--audience productimport" in refused.text
        # A valid token without the right to create ProductImports there (RBAC, asked
        # by the API through a SubjectAccessReview).
        assert upload(stranger).status_code == 403
        accepted = upload(token)
        assert accepted.status_code == 202, accepted.text
        name = accepted.json()["name"]

        def finished() -> dict[str, Any] | None:
            doc = json.loads(cluster.kubectl("get", PI, name, "-n", tenant, "-o", "json").stdout)
            status = doc.get("status") or {}
            return doc if status.get("phase") in ("Succeeded", "Failed") else None

        doc = wait_for(
            f"ProductImport {tenant}/{name} to finish",
            finished,
            why=lambda: _pods_report(cluster, tenant) + "\n" + _pods_report(cluster, home),
        )
        status = doc["status"]
        assert status["phase"] == "Succeeded", (status, _pods_report(cluster, tenant))
        assert status["counts"]["rows"] > 0

        # The import ran as the chart's loader account (watching every namespace: the
        # namespace's default one), with no Kubernetes credentials at all.
        pods = json.loads(
            cluster.kubectl("get", "pods", "-n", tenant, "-l", f"job-name={status['jobName']}",
                            "-o", "json").stdout
        )["items"]  # fmt: skip
        assert pods, "the import Job's Pod is gone"
        for pod in pods:
            account = f"{fullname}-loader" if namespaced else "default"
            assert pod["spec"]["serviceAccountName"] == account
            assert pod["spec"]["automountServiceAccountToken"] is False
            mounts = [m for c in pod["spec"]["containers"] for m in c.get("volumeMounts", [])]
            assert not [m for m in mounts if "serviceaccount" in m["mountPath"]]
            assert not [v for v in pod["spec"]["volumes"] if "projected" in v], "a token"
            (container,) = pod["status"]["containerStatuses"]
            assert container["imageID"], "the loader ran no image"
            assert container["state"]["terminated"]["exitCode"] == 0
        # The chart's operator and API did get theirs (in-cluster access, as in a cluster).
        chart_pods = json.loads(cluster.kubectl("get", "pods", "-n", home, "-o", "json").stdout)
        assert chart_pods["items"]
        for pod in chart_pods["items"]:
            assert pod["spec"]["automountServiceAccountToken"] is True
    finally:
        subprocess.run(
            [str(helm), kubeconfig, "uninstall", release, "-n", home, "--wait", "--timeout=2m"],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        cluster.devenv.up()
        for ns in (home, tenant):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
