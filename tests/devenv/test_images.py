"""devenv/images.py: what decides a rebuild (the cache keys), the name the chart deploys,
when load() imports into containerd, and the product image itself (built warm, run as
the chart runs it: uid 10001, read-only root, a writable /tmp). The base image is built
once (a minute, cached outside the clone) if no earlier run made it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devenv import images, node


def test_the_base_key_changes_with_each_input_and_only_then(monkeypatch):
    key = images.base_key()
    assert images.base_key() == key
    assert images.base_ref() == f"localhost/productimport-base:{key}"
    changed = {
        "BASE_SUITE": "trixie",
        "BASE_RECIPE_VERSION": images.BASE_RECIPE_VERSION + 1,
        "BASE_PACKAGES": (*images.BASE_PACKAGES, "tzdata"),
        "BASE_DPKG_OPTIONS": images.BASE_DPKG_OPTIONS[:-1],
        "BASE_CUSTOMIZE_HOOKS": images.BASE_CUSTOMIZE_HOOKS[1:],
        "BASE_CONFIG": (*images.BASE_CONFIG, "--env=TZ=UTC"),
        "MERGED_USR_HOOKS": "/elsewhere",
    }
    for name, value in changed.items():
        with monkeypatch.context() as patch:
            patch.setattr(images, name, value)
            assert images.base_key() != key, name
    # Where the tarball is written is not an input.
    with monkeypatch.context() as patch:
        patch.setenv("PRODUCTIMPORT_CACHE", "/somewhere/else")
        assert images.base_key() == key


def test_the_pause_key_follows_its_sources(monkeypatch, tmp_path):
    source = tmp_path / "pause"
    shutil.copytree(images.PAUSE_SOURCE, source)
    key = images.pause_key()
    monkeypatch.setattr(images, "PAUSE_SOURCE", source)
    assert images.pause_key() == key  # the same content, wherever it is
    main = source / "main.go"
    main.write_text(main.read_text() + "\n// changed\n")
    edited = images.pause_key()
    assert edited != key
    (source / "go.mod").write_text((source / "go.mod").read_text().replace("1.25", "1.26"))
    assert images.pause_key() not in (key, edited)
    assert images.pause_ref() == f"localhost/productimport-pause:{images.pause_key()}"


def test_the_product_ref_is_the_image_the_chart_deploys(monkeypatch, tmp_path):
    real = images.CHART
    values = yaml.safe_load((real / "values.yaml").read_text())
    chart = yaml.safe_load((real / "Chart.yaml").read_text())
    expected_tag = values["image"]["tag"] or chart["appVersion"]
    assert images.product_ref() == f"{values['image']['repository']}:{expected_tag}"

    def write(repository: str, tag: str, app_version: str) -> str:
        values["image"].update(repository=repository, tag=tag)
        chart["appVersion"] = app_version
        (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
        (tmp_path / "Chart.yaml").write_text(yaml.safe_dump(chart))
        return images.product_ref()

    monkeypatch.setattr(images, "CHART", tmp_path)
    # The helper's rule: image.tag when set, else the chart's appVersion.
    assert write("example.org/team/pi", "", "9.8.7") == "example.org/team/pi:9.8.7"
    assert write("example.org/team/pi", "dev-1", "9.8.7") == "example.org/team/pi:dev-1"


@pytest.mark.cluster
def test_load_imports_only_a_changed_or_missing_image(cluster, tmp_path):
    """Into the node's real containerd, under the image's own name (what the kubelet
    looks up with pull policy Never); a second load of the same build is skipped."""
    socket = node.NodePaths(cluster.devenv.layout).containerd_socket
    ref = f"localhost/productimport-load-test:{tmp_path.name[-12:].lower()}"
    container = subprocess.run(
        ["buildah", "from", "--pull-never", images.pause_ref()],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    ctr = ["ctr", "--address", str(socket), "--namespace", "k8s.io", "images"]
    try:
        subprocess.run(["buildah", "commit", "--quiet", container, ref], check=True)
        stamps = tmp_path / "stamps"
        assert images.load(ref, socket, stamps)  # not in containerd yet
        listed = subprocess.run([*ctr, "ls", "--quiet"], capture_output=True, text=True)
        assert ref in listed.stdout.split()
        assert not images.load(ref, socket, stamps)  # same image ID, still listed
        subprocess.run([*ctr, "rm", ref], capture_output=True, check=True)
        assert images.load(ref, socket, stamps)  # containerd lost it
        subprocess.run(["buildah", "config", "--label", "changed=yes", container], check=True)
        subprocess.run(["buildah", "commit", "--quiet", container, ref], check=True)
        assert images.load(ref, socket, stamps)  # rebuilt: another image ID
        assert not images.load(ref, socket, stamps)
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
        subprocess.run(["buildah", "rmi", "--force", ref], capture_output=True, check=False)
        subprocess.run([*ctr, "rm", ref], capture_output=True, check=False)


# --- the product image itself -------------------------------------------------------


@contextlib.contextmanager
def _mounted(ref: str) -> Iterator[Path]:
    """ref's root filesystem, mounted in a buildah working container for the duration."""
    container = subprocess.run(
        ["buildah", "from", "--pull-never", ref], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        rootfs = subprocess.run(
            ["buildah", "mount", container], capture_output=True, text=True, check=True
        ).stdout.strip()
        yield Path(rootfs)
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)


@pytest.fixture(scope="module")
def product_rootfs() -> Iterator[tuple[str, Path]]:
    """The product image, built from the checkout (warm: seconds), and its root
    filesystem; the tests run it read-only with runc (as root, like the dev node)."""
    ref = images.build_product_image()
    with _mounted(ref) as rootfs:
        yield ref, rootfs


def _config(ref: str) -> dict:
    out = subprocess.run(
        ["buildah", "inspect", "--type", "image", ref], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)["Docker"]["config"]


def _run_read_only(ref: str, rootfs: Path, tmp_path: Path, *args: str) -> tuple[int, str]:
    """Runs args in the image the way the chart's Pods run: its user and environment, the
    root filesystem read-only, an empty writable /tmp."""
    config = _config(ref)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    spec = json.loads((bundle / "config.json").read_text())
    uid, gid = (int(n) for n in config["User"].split(":"))
    spec["root"] = {"path": str(rootfs), "readonly": True}
    spec["process"].update(
        terminal=False, args=list(args), env=config["Env"], cwd=config["WorkingDir"],
        user={"uid": uid, "gid": gid},
    )  # fmt: skip
    spec["mounts"].append(
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777"]}
    )  # fmt: skip
    (bundle / "config.json").write_text(json.dumps(spec))
    name = f"pi-image-test-{os.getpid()}-{tmp_path.name}"[:60]
    done = subprocess.run(
        ["runc", "--root", str(tmp_path / "runc"), "run", "--bundle", str(bundle), name],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def test_the_image_runs_as_10001_with_a_read_only_root(product_rootfs, tmp_path):
    ref, rootfs = product_rootfs
    config = _config(ref)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["productimport-entrypoint"]
    assert config["Healthcheck"]["Test"][:2] == ["CMD", "productimport-entrypoint"]
    script = (
        "import duckdb, os, pathlib\n"
        "print(os.getuid(), os.getgid(), os.environ['HOME'])\n"
        "db = duckdb.connect('/tmp/t.duckdb')\n"
        "db.sql('create table t as select range + 1 as i from range(84)')\n"
        "print(db.sql('select sum(i) // 85 from t').fetchall()[0][0])\n"
        "try:\n"
        "    pathlib.Path('/opt/venv/x').touch()\n"
        "except OSError as exc:\n"
        "    print(exc.strerror)\n"
    )
    code, output = _run_read_only(ref, rootfs, tmp_path, "python", "-c", script)
    assert code == 0, output
    assert output.split("\n")[:3] == ["10001 10001 /tmp", "42", "Read-only file system"], output


def test_the_image_runs_the_loader(product_rootfs, tmp_path):
    ref, rootfs = product_rootfs
    code, output = _run_read_only(
        ref, rootfs, tmp_path, "productimport-entrypoint", "loader", "--help"
    )
    assert code == 0, output
    assert "Import a product file into a catalog" in output


def test_the_image_is_small_and_keeps_the_hosts_ca_bundle_out(product_rootfs):
    ref, rootfs = product_rootfs
    # 437 MB on 2026-11-29: 273 MB before the catalog became a Delta table, plus
    # delta-rs's one library (128 MB, already stripped), arro3 (11 MB) and, for OIDC
    # tokens, cryptography (16 MB). The bound catches the next unnoticed dependency.
    assert images.image_size_mb(ref) < 480
    assert not (rootfs / "opt/venv/bin/pip").exists()
    # The host's bundle (here it trusts an intercepting proxy) was only mounted into the
    # build's RUN steps: the image has the base's own, from Debian's ca-certificates.
    with _mounted(images.base_ref()) as base:
        bundle = "etc/ssl/certs/ca-certificates.crt"
        assert (rootfs / bundle).read_bytes() == (base / bundle).read_bytes()
