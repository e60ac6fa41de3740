"""`kubectl productimport` against the dev environment: uploads through the REST API and
straight to MinIO, watching until the import ends, its error report, catalog versions and
rollback, the import list, and kubectl itself finding the plugin on PATH.

The plugin runs as its own process with the user's kubeconfig (the dev environment's
admin) and, with --api, this checkout's upload API over real HTTP; the imports are run by
the dev operator as loader Pods on the dev node.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from productimport.kubectl_plugin import STAGES, Snapshot, follow
from productimport.models.resource import GROUP, LABEL_API, LABEL_CATALOG, PLURAL, VERSION
from tests.shared_data import SHARED_DATA

REPO = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 600  # as in conftest.py: a bound on waiting for the operator

WOO = SHARED_DATA / "woocommerce-sample-data" / "sample_products.csv"
TIMEOUT = str(WAIT_SECONDS)


def api_args(plugin_api, token: str) -> list[str]:
    return ["--api", plugin_api.url, "--token", token]


def minio_args(cluster) -> list[str]:
    return ["--minio-endpoint", f"http://{cluster.env['MINIO_ENDPOINT']}"]


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def products_csv(tmp_path: Path, name: str, rows: list[tuple[str, str, str]]) -> Path:
    path = tmp_path / name
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["sku", "name", "price"])
    writer.writerows(rows)
    path.write_text(out.getvalue())
    return path


def good_rows(n: int, prefix: str = "P") -> list[tuple[str, str, str]]:
    return [(f"{prefix}-{i:03d}", f"Product {i}", f"{i}.50") for i in range(n)]


def the_import(kube, namespace: str, name: str) -> dict:
    return kube.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


# -- upload and watch --------------------------------------------------------------------------


def test_upload_through_the_api_and_watch_until_succeeded(
    plugin, plugin_api, plugin_token, kube, ns
):
    done = plugin("upload", str(WOO), "--catalog", "shop", "--preset", "woocommerce",
                  "-n", ns, *api_args(plugin_api, plugin_token))  # fmt: skip
    name = ok(done).strip()
    obj = the_import(kube, ns, name)
    assert obj["metadata"]["labels"][LABEL_API] == "native"  # made by the API's native route
    assert obj["spec"]["preset"] == "woocommerce" and obj["spec"]["catalog"] == "shop"

    # Through the cluster (the kubeconfig) ...
    watched = plugin("watch", name, "-n", ns, "--timeout", TIMEOUT)
    summary = ok(watched).strip().splitlines()[-1]
    assert summary.startswith(f"{ns}/{name} Succeeded: rows ")
    assert "catalog shop version 1" in summary
    # ... and through the API, which gives the same outcome.
    again = plugin("watch", name, "-n", ns, "--catalog", "shop", "--timeout", TIMEOUT,
                   *api_args(plugin_api, plugin_token))  # fmt: skip
    assert ok(again).strip().splitlines()[-1] == summary
    # Without a terminal there is no live bar: a line per change, on stderr.
    assert f"{name} Succeeded" in watched.stderr


def test_upload_straight_to_minio_with_a_manifest(plugin, cluster, kube, minio, ns, tmp_path):
    path = products_csv(tmp_path, "spring.csv", good_rows(25))
    done = plugin("upload", str(path), "--catalog", "spring", "--mode", "upsert", "-n", ns,
                  *minio_args(cluster))  # fmt: skip
    name = ok(done).strip()
    obj = the_import(kube, ns, name)
    assert obj["metadata"]["labels"] == {LABEL_CATALOG: "spring", LABEL_API: "kubectl"}
    assert obj["metadata"]["annotations"][f"{GROUP}/original-filename"] == "spring.csv"
    spec = obj["spec"]
    assert spec["format"] == "csv" and spec["mode"] == "upsert" and spec["dryRun"] is False
    source = spec["source"]["object"]
    # Where the API puts uploads: the only place the operator takes this namespace's from.
    assert source["bucket"] == "uploads"
    assert source["key"].startswith(f"{ns}/spring/") and source["key"].endswith(".upload")
    assert "spring.csv" not in source["key"]
    assert minio.get_object(source["bucket"], source["key"]).read() == path.read_bytes()

    watched = plugin("watch", name, "-n", ns, "--timeout", TIMEOUT)
    last = ok(watched).strip().splitlines()[-1]
    assert last.startswith(f"{ns}/{name} Succeeded: rows 25, created 25, updated 0")


def test_upload_with_watch_exits_1_for_a_failed_import(plugin, cluster, kube, ns, tmp_path):
    # No sku column: the whole file fails.
    path = tmp_path / "nosku.csv"
    path.write_text("title,price\nA,1\nB,2\n")
    done = plugin("upload", str(path), "--catalog", "broken", "-n", ns, "--watch",
                  *minio_args(cluster))  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    name, summary, *message = done.stdout.strip().splitlines()
    status = the_import(kube, ns, name)["status"]
    assert status["phase"] == "Failed"
    assert summary.startswith(f"{ns}/{name} Failed ({status['reason']}): rows ")
    assert message == [f"  {status['message']}"]


def test_upload_refusals_say_why(plugin, plugin_api, plugin_token, cluster, ns, tmp_path):
    path = products_csv(tmp_path, "p.csv", good_rows(2))
    # The API's own words, and nothing made.
    done = plugin("upload", str(path), "--catalog", "c", "-n", ns, "--notify-webhook",
                  "http://hooks.example.com/x", *api_args(plugin_api, plugin_token))  # fmt: skip
    assert done.returncode == 1
    assert "HTTP 422 (invalid_webhook)" in done.stderr and "https://" in done.stderr
    # Content that is not a product file is refused before anything is stored.
    pdf = tmp_path / "catalog.pdf"
    pdf.write_bytes(b"%PDF-1.7\n...")
    done = plugin("upload", str(pdf), "--catalog", "c", "-n", ns, *minio_args(cluster))
    assert done.returncode == 1 and "a PDF document" in done.stderr
    # No MinIO keys and no API: a usage error naming both ways.
    done = plugin("upload", str(path), "--catalog", "c", "-n", ns, *minio_args(cluster),
                  env={"MINIO_ACCESS_KEY": "", "MINIO_SECRET_KEY": ""})  # fmt: skip
    assert done.returncode == 2 and "MINIO_ACCESS_KEY" in done.stderr and "--api" in done.stderr
    # --api without a token, and a kubeconfig whose user has none (a client certificate).
    done = plugin("upload", str(path), "--catalog", "c", "-n", ns, "--api", plugin_api.url)
    assert done.returncode == 2 and "--token" in done.stderr


# -- errors -----------------------------------------------------------------------------------


def test_errors_of_a_file_with_bad_rows(plugin, plugin_api, plugin_token, cluster, ns, tmp_path):
    rows = good_rows(60)
    rows[10] = ("P-010", "Product 10", "ten euros")  # line 12
    rows[40] = ("P-040", "Product 40", "n/a")  # line 42
    path = products_csv(tmp_path, "bad.csv", rows)
    name = ok(plugin("upload", str(path), "--catalog", "bad", "-n", ns, *minio_args(cluster)))
    name = name.strip()
    last = ok(plugin("watch", name, "-n", ns, "--timeout", TIMEOUT)).strip().splitlines()[-1]
    assert "rows 60, created 58" in last and "rejected 2" in last

    # From MinIO, next to status.errorsRef ...
    report = ok(plugin("errors", name, "-n", ns, *minio_args(cluster)))
    records = list(csv.DictReader(io.StringIO(report)))
    assert [(r["line"], r["column"], r["code"]) for r in records] == [
        ("12", "price", "invalid_number"),
        ("42", "price", "invalid_number"),
    ]
    assert records[0]["value"] == "ten euros"
    as_json = json.loads(ok(plugin("errors", name, "-n", ns, "--json", *minio_args(cluster))))
    assert [(r["line"], r["code"]) for r in as_json] == [(12, "invalid_number"),
                                                         (42, "invalid_number")]  # fmt: skip
    # ... and through the API: the same report (the catalog read from the resource).
    via_api = plugin("errors", name, "-n", ns, *api_args(plugin_api, plugin_token))
    assert ok(via_api) == report
    via_api_json = plugin("errors", name, "-n", ns, "--json", "--catalog", "bad",
                          *api_args(plugin_api, plugin_token))  # fmt: skip
    assert json.loads(ok(via_api_json)) == as_json
    out = tmp_path / "errors.csv"
    ok(plugin("errors", name, "-n", ns, "-o", str(out), *minio_args(cluster)))
    assert out.read_text() == report


def test_errors_of_a_clean_import_is_an_empty_report(plugin, cluster, ns, tmp_path):
    path = products_csv(tmp_path, "clean.csv", good_rows(3))
    name = ok(plugin("upload", str(path), "--catalog", "clean", "-n", ns, *minio_args(cluster)))
    name = name.strip()
    ok(plugin("watch", name, "-n", ns, "--timeout", TIMEOUT))
    assert ok(plugin("errors", name, "-n", ns, *minio_args(cluster))) == (
        "line,column,code,message,value\n"
    )
    assert json.loads(ok(plugin("errors", name, "-n", ns, "--json", *minio_args(cluster)))) == []
    missing = plugin("errors", "no-such-import", "-n", ns, *minio_args(cluster))
    assert missing.returncode == 1 and "404" in missing.stderr


# -- versions and rollback ------------------------------------------------------------------


def test_versions_and_rollback(plugin, plugin_api, plugin_token, cluster, ns, tmp_path):
    api = api_args(plugin_api, plugin_token)
    first = products_csv(tmp_path, "v1.csv", good_rows(5))
    second = products_csv(tmp_path, "v2.csv", good_rows(2, prefix="Q"))
    for path, mode in ((first, "upsert"), (second, "replace")):
        name = ok(plugin("upload", str(path), "--catalog", "main", "--mode", mode, "-n", ns,
                         "--watch", *api)).strip().splitlines()[0]  # fmt: skip
        assert name

    listed = json.loads(ok(plugin("versions", "--catalog", "main", "-n", ns, "--json", *api)))
    assert [v["version"] for v in listed] == [2, 1]
    assert [v["products"] for v in listed] == [2, 5]
    table = ok(plugin("versions", "--catalog", "main", "-n", ns, *api)).splitlines()
    assert table[0].split()[:3] == ["VERSION", "CREATED", "PRODUCTS"]
    assert table[1].split()[0] == "2" and table[2].split()[0] == "1"

    rolled = ok(plugin("rollback", "--catalog", "main", "--to", "1", "-n", ns, *api))
    assert rolled.strip() == "catalog main: version 3 has version 1's products (5 products)"
    listed = json.loads(ok(plugin("versions", "--catalog", "main", "-n", ns, "--json", *api)))
    assert listed[0]["version"] == 3 and listed[0]["rollbackOf"] == 1
    assert "rollback to 1" in ok(plugin("versions", "--catalog", "main", "-n", ns, *api))
    page = httpx.get(
        f"{plugin_api.url}/api/v1/namespaces/{ns}/catalogs/main/products",
        headers={"Authorization": f"Bearer {plugin_token}"},
    ).json()
    assert page["catalogVersion"] == 3 and page["total"] == 5

    unknown = plugin("rollback", "--catalog", "main", "--to", "9", "-n", ns, *api)
    assert unknown.returncode == 1 and "HTTP 404" in unknown.stderr
    no_api = plugin("versions", "--catalog", "main", "-n", ns)
    assert no_api.returncode == 2 and "--api" in no_api.stderr


# -- get --------------------------------------------------------------------------------------


def test_get_lists_imports_with_phase_and_counts(plugin, cluster, ns, tmp_path):
    path = products_csv(tmp_path, "g.csv", good_rows(4))
    name = ok(plugin("upload", str(path), "--catalog", "listed", "-n", ns, "--watch",
                     *minio_args(cluster))).splitlines()[0]  # fmt: skip
    table = ok(plugin("get", "-n", ns)).splitlines()
    assert table[0].split() == ["NAME", "CATALOG", "PHASE", "ROWS", "CREATED", "UPDATED",
                                "REJECTED", "QUEUE", "AGE"]  # fmt: skip
    assert table[1].split()[:7] == [name, "listed", "Succeeded", "4", "4", "0", "0"]
    everywhere = ok(plugin("get", "-A", "--catalog", "listed")).splitlines()
    assert everywhere[0].split()[0] == "NAMESPACE"
    assert any(line.split()[:2] == [ns, name] for line in everywhere[1:])
    assert ok(plugin("get", "-n", ns, "-o", "name")).split() == [f"{PLURAL}.{GROUP}/{name}"]
    assert ok(plugin("get", name, "-n", ns, "-o", "json"))
    assert "No productimports found" in plugin("get", "-n", ns, "--catalog", "none").stderr


# -- kubectl finds it -------------------------------------------------------------------------


def test_kubectl_discovers_the_plugin_on_path(cluster, plugin_env, ns, tmp_path):
    """The real kubectl of the dev environment runs `kubectl-productimport` from PATH,
    with the user's KUBECONFIG passed through."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "kubectl-productimport"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m productimport.kubectl_plugin "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    kubectl = str(cluster.devenv.bin_dir / "kubectl")
    env = {**plugin_env, "PATH": f"{bin_dir}{os.pathsep}{plugin_env.get('PATH', '')}"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([kubectl, *args], capture_output=True, text=True, env=env,
                              cwd=REPO, timeout=120, check=False)  # fmt: skip

    helped = run("productimport", "--help")
    text = ok(helped)
    assert "Usage: kubectl productimport" in text
    for command in ("upload", "watch", "errors", "versions", "rollback", "get"):
        assert command in text
    listed = run("plugin", "list")
    assert str(wrapper) in listed.stdout, listed.stdout + listed.stderr
    # The plugin gets the user's kubeconfig through kubectl.
    assert "No productimports found" in run("productimport", "get", "-n", ns).stderr


# -- the progress loop, without a cluster -----------------------------------------------------


def snapshot(phase: str, stage: str | None = None, rows: int | None = None) -> Snapshot:
    progress = {"stage": stage, "rowsRead": rows} if stage else None
    counts = {"rows": 3, "created": 3} if phase in ("Succeeded", "Failed") else {}
    return Snapshot("imp", "ns", "main", phase, "Failed" if phase == "Failed" else None,
                    "no sku column" if phase == "Failed" else None, counts, progress,
                    1 if phase == "Succeeded" else None, False, None)  # fmt: skip


@pytest.mark.parametrize(
    ("phases", "code"),
    [
        ([("Queued", None), ("Running", "reading"), ("Running", "merging"),
          ("Succeeded", "done")], 0),
        ([("Running", "validating"), ("Failed", None)], 1),
        ([("Cancelled", None)], 1),
    ],
)  # fmt: skip
def test_follow_exits_with_the_outcome(phases, code, capsys):
    seen = iter([snapshot(p, s, 3) for p, s in phases])
    assert follow(lambda: next(seen), "imp", timeout=0, interval=0) == code
    # The summary's first line; a failure's message follows it, indented.
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"ns/imp {phases[-1][0]}")
    assert printed[1:] == (["  no sku column"] if phases[-1][0] == "Failed" else [])


def test_follow_gives_up_at_its_timeout():
    assert follow(lambda: snapshot("Queued"), "imp", timeout=0.3, interval=0.05) == 3
    assert STAGES[-1] == "done"
