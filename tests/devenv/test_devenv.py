"""The dev environment itself: MinIO semantics the engine relies on, a real node, and a
stop that leaves the machine as it found it."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import pytest

from devenv import images, node
from devenv.component import Component, ForeignComponent
from devenv.controlplane import DevEnv, _established
from devenv.layout import Layout, Network, Ports
from productimport.engine.errors import PreconditionFailed
from productimport.engine.objectstore import MinioObjectStore

pytestmark = pytest.mark.cluster


def test_minio_put_and_get(minio):
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    minio.make_bucket(bucket)
    minio.put_object(bucket, "a/b.txt", io.BytesIO(b"hello"), 5)
    assert minio.get_object(bucket, "a/b.txt").read() == b"hello"


def test_minio_honours_conditional_puts(minio):
    """The catalog pointer moves by If-Match / If-None-Match: MinIO must refuse a stale
    writer, or two concurrent imports could lose each other's updates."""
    store = MinioObjectStore(minio, f"t-{uuid.uuid4().hex[:12]}")
    first = store.put_if("CURRENT", b"v1", None)  # If-None-Match: *
    with pytest.raises(PreconditionFailed):
        store.put_if("CURRENT", b"v1-again", None)  # exists already
    second = store.put_if("CURRENT", b"v2", first)  # If-Match: the etag we read
    with pytest.raises(PreconditionFailed):
        store.put_if("CURRENT", b"v3-stale", first)  # someone moved it since
    data, etag = store.get_with_etag("CURRENT")
    assert data == b"v2" and etag == second


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


# A second environment's ports, beside the session's (Ports()).
SECOND_PORTS = Ports(
    etcd=24790, etcd_peer=24800, apiserver=17443, controller_manager=21257,
    minio=29000, minio_console=29001, api=28080, operator_health=28081,
    kube_scheduler=21259, kubelet=21250, kubelet_healthz=21248, kube_proxy_healthz=21256,
    kube_proxy_metrics=21249, containerd_stream=21010, test_receivers=(28443, 28444),
    smtp=28025,
)  # fmt: skip
SECOND_NETWORK = Network(bridge="pidev1", subnet="10.214.0.0/16")


def _listening(ports: Ports) -> list[int]:
    """Every port of a layout (some fields hold several)."""
    values = vars(ports).values()
    return [p for v in values for p in (v if isinstance(v, tuple) else (v,))]


def _ephemeral_range() -> range:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


@pytest.mark.parametrize("ports", [Ports(), SECOND_PORTS], ids=["default", "second"])
def test_listen_ports_lie_outside_the_ephemeral_range(ports):
    # The kernel gives any outgoing connection a local port from this range, so a server
    # told to listen inside it fails now and then with "address already in use" (etcd's
    # peer port 33800 did, in a CI run).
    taken = [port for port in _listening(ports) if port in _ephemeral_range()]
    assert taken == []
    assert len(set(_listening(ports))) == len(_listening(ports))


def test_a_second_environment_starts_and_stops_leaving_no_process(cluster, tmp_path):
    # Its own directory, ports and bridge, beside the session's environment; no node (a
    # machine holds one: the kubelet's cgroups and kube-proxy's chains are host-wide).
    assert not set(_listening(SECOND_PORTS)) & set(_listening(Ports()))
    env = DevEnv(Layout(tmp_path / "dev", SECOND_PORTS, SECOND_NETWORK))
    try:
        values = env.up(with_services=False, with_node=False)
        assert env.kubectl("get", "--raw", "/readyz").stdout == "ok"
        assert values["MINIO_ENDPOINT"] == f"10.214.0.1:{SECOND_PORTS.minio}"
        assert _processes_mentioning(str(tmp_path))
    finally:
        stopped = env.down()
    assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "minio"} <= set(
        stopped
    )
    assert _processes_mentioning(str(tmp_path)) == []
    assert not (tmp_path / "dev" / "env").exists()
    assert node.leftovers(env.layout) == []
    # The session's node was left alone.
    assert cluster.devenv.kubectl("get", "--raw", "/readyz").stdout == "ok"
    assert node.node_ready(cluster.devenv.layout, cluster.devenv.bin_dir)


def test_the_node_is_a_real_kubelet_on_containerd(cluster):
    info = json.loads(cluster.kubectl("get", "node", node.NODE_NAME, "-o", "json").stdout)
    runtime = info["status"]["nodeInfo"]["containerRuntimeVersion"]
    assert runtime.startswith("containerd://1."), runtime
    assert info["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.35")
    addresses = {a["type"]: a["address"] for a in info["status"]["addresses"]}
    assert addresses["InternalIP"] == cluster.devenv.layout.network.host_ip


def test_down_leaves_the_machine_as_it_found_it(cluster):
    """Stop the whole environment (Pods running), check nothing of it is left on the
    machine (processes, mounts, the bridge, iptables chains, cgroups, host paths), then
    bring it up again for the tests that follow."""
    ns = cluster.namespace("leftovers")
    cluster.kubectl(
        "run", "sleeper", "-n", ns, f"--image={images.pause_ref()}",
        "--image-pull-policy=Never", "--restart=Never",
    )  # fmt: skip
    cluster.kubectl("wait", "-n", ns, "pod/sleeper", "--for=condition=Ready", "--timeout=120s")
    assert node.leftovers(cluster.devenv.layout)  # the check does see a running node
    try:
        cluster.devenv.down()
        assert node.leftovers(cluster.devenv.layout) == []
    finally:
        cluster.devenv.up()
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


@pytest.mark.parametrize(
    ("status", "established"),
    [
        (None, False),  # just created: the apiserver has not written a status yet
        ({}, False),
        ({"conditions": None}, False),
        ({"conditions": [{"type": "NamesAccepted", "status": "True"}]}, False),
        ({"conditions": [{"type": "Established", "status": "False"}]}, False),
        ({"conditions": [{"type": "Established", "status": "True"}]}, True),
    ],
)
def test_a_crd_counts_as_served_only_once_established(status, established):
    crd = {"metadata": {"name": "productimports.example.com"}}
    if status is not None:
        crd["status"] = status
    assert _established(crd) is established


def test_a_stray_process_answering_for_a_component_stops_the_start(tmp_path):
    """A process an earlier environment lost track of must not pass for the new one."""
    env = DevEnv(Layout(tmp_path / "dev", SECOND_PORTS, SECOND_NETWORK))
    env.layout.root.mkdir(parents=True)
    stray = Component("api", ["sleep", "30"], ready=lambda: True)
    # Its own kind of failure: the test session then stops nothing of the machine's
    # shared parts (another checkout's environment may be the one answering).
    with pytest.raises(ForeignComponent, match="already answers for api"):
        env.start(stray)
    assert env.sup.pid("api") is None  # nothing was started in its place
