"""The dev cluster's node: a real kubelet and kube-proxy over containerd, runc and CNI.

Everything is the real program: the kubelet and kube-proxy are built from the same pinned
Kubernetes module as the API server (devenv/obtain.sh); containerd, runc and the CNI
plugins are Debian's (devenv/debian-packages.sh). Pods run the images built on this
machine (devenv/images.py): no registry is reachable, so nothing is ever pulled.

The network is a Linux bridge that devenv makes itself (Layout.network): each Pod gets its
own network namespace and an address on the bridge's private subnet, reaches the API
server through the `kubernetes` Service (kube-proxy's iptables rules) and MinIO at the
bridge's own address. Nothing routes or masquerades that subnet anywhere else.

What the kubelet, containerd and CNI write outside the directories they are given (shim
sockets in /run/containerd, CNI's result cache, /var/log/containers, the device-plugin
directory, iptables chains, `kubepods` cgroups) is removed again by `teardown`, which also
stops every Pod's containers: after `make dev-down` the machine is as it was
(`leftovers` lists whatever is not, and a test checks that it lists nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from devenv import pki as pki_mod
from devenv.component import (
    Component,
    DevEnvError,
    http_ok,
    write_if_changed,
    write_kubeconfig,
)
from devenv.layout import Layout, Network

NODE_NAME = "devnode"
CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"
CNI_BIN_DIR = "/usr/lib/cni"
SERVICE_CIDR = "10.96.0.0/16"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Written by the kubelet, containerd or CNI whatever they are told; `up` records which of
# them existed before, and `teardown` removes the others.
HOST_PATHS = (
    "/var/lib/kubelet",  # device-plugins/ is hard-coded in the kubelet
    "/var/log/containers",  # symlinks to each container's log, hard-coded
    "/var/log/pods",
    "/var/lib/cni",  # libcni's result cache
    "/run/containerd",  # shim sockets (/run/containerd/s), hard-coded in containerd 1.6
    "/etc/cni",  # buildah's CNI lock, even with --network host
)
OUR_CHAIN_PREFIXES = ("KUBE-", "CNI-")
IPTABLES_FLAVOURS = ("iptables-nft", "ip6tables-nft", "iptables-legacy", "ip6tables-legacy")


class NodePaths:
    """Where the node keeps its state: everything under <dev dir>/node."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.root = layout.root / "node"

    def sub(self, name: str) -> Path:
        return self.layout.sub(f"node/{name}")

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def host_paths_record(self) -> Path:
        return self.root / "host-paths-before.json"


def require_root() -> None:
    if os.geteuid() != 0:
        raise DevEnvError(
            "the dev node (kubelet, containerd, the Pod bridge) needs root: run as root"
        )


def ran_a_node(layout: Layout) -> bool:
    """Whether this environment ever started a node (host-wide cleanup is its job only:
    a second, node-less environment must not touch the first one's chains or cgroups)."""
    return (NodePaths(layout).root / "containerd.toml").exists()


# -- the bridge -------------------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise DevEnvError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def bridge_exists(network: Network) -> bool:
    return _ip("link", "show", "dev", network.bridge, check=False).returncode == 0


def ensure_bridge(network: Network) -> None:
    """The bridge with its address, before anything listens on that address. The CNI
    bridge plugin later finds it as it is and attaches each Pod's veth to it."""
    if not bridge_exists(network):
        _ip("link", "add", "name", network.bridge, "type", "bridge")
    addr = f"{network.host_ip}/{network.prefix_len}"
    shown = _ip("-o", "addr", "show", "dev", network.bridge).stdout
    if f" {addr} " not in shown:
        _ip("addr", "add", addr, "dev", network.bridge)
    _ip("link", "set", "dev", network.bridge, "up")
    # Service addresses go to the bridge too, never to the default route: the host's own
    # connections to a ClusterIP (kube-proxy's rules rewrite them) stay on this machine
    # even before kube-proxy has written a rule.
    route = _ip("route", "show", SERVICE_CIDR, check=False).stdout
    if network.bridge not in route:
        _ip("route", "replace", SERVICE_CIDR, "dev", network.bridge, "src", network.host_ip)


def delete_bridge(network: Network) -> None:
    if bridge_exists(network):
        _ip("link", "delete", "dev", network.bridge)


# -- configuration files ----------------------------------------------------------------


def _containerd_config(paths: NodePaths, pause_image: str) -> Path:
    L = paths.layout
    config = f"""\
version = 2
root = {json.dumps(str(paths.sub("containerd/root")))}
state = {json.dumps(str(paths.sub("containerd/state")))}
# The kubelet's QoS cgroups decide OOM scores; root here lacks CAP_SYS_RESOURCE.
oom_score = 0

[grpc]
  address = {json.dumps(str(paths.containerd_socket))}

[ttrpc]
  address = {json.dumps(str(paths.containerd_socket) + ".ttrpc")}

[debug]
  address = {json.dumps(str(paths.root / "containerd-debug.sock"))}
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = {json.dumps(pause_image)}
    disable_apparmor = true
    enable_selinux = false
    # Without it every sandbox fails: "can't get final child's PID from pipe: EOF"
    # (runc may not lower a process's oom_score_adj here).
    restrict_oom_score_adj = true
    # Pods' network namespaces live under our state directory, not /var/run/netns.
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "{L.ports.containerd_stream}"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{CNI_BIN_DIR}"
      conf_dir = {json.dumps(str(paths.sub("cni/net.d")))}
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = ""
  [plugins."io.containerd.internal.v1.opt"]
    path = {json.dumps(str(paths.sub("containerd/opt")))}
"""
    path = write_if_changed(paths.root / "containerd.toml", config)
    # The Pod network: the bridge devenv made, addresses from its subnet (the gateway,
    # i.e. the host, keeps the first one). No masquerading: Pods reach this machine only.
    conflist = {
        "cniVersion": "0.4.0",
        "name": "productimport-dev",
        "plugins": [
            {
                "type": "bridge",
                "bridge": L.network.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": L.network.subnet, "gateway": L.network.host_ip}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.sub("cni/ipam")),
                },
            }
        ],
    }
    write_if_changed(
        paths.sub("cni/net.d") / "10-productimport-dev.conflist", json.dumps(conflist, indent=2)
    )
    return path


def _kubelet_config(paths: NodePaths, pki: pki_mod.Pki) -> Path:
    L = paths.layout
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        # This kind of machine has the cgroup v1 hierarchy; Kubernetes 1.35 refuses it
        # unless told, and there is no systemd to delegate cgroups to.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        "address": L.network.host_ip,
        "port": L.ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": L.ports.kubelet_healthz,
        "tlsCertFile": str(pki.cert("kubelet-serving")),
        "tlsPrivateKeyFile": str(pki.key("kubelet-serving")),
        # As in a real cluster: client certificates from our CA and bearer tokens are
        # authenticated, and the API server decides who may read logs or exec.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "podLogsDir": str(paths.sub("pod-logs")),
        "volumePluginDir": str(paths.sub("volume-plugins")),
        "resolvConf": "/etc/resolv.conf",
        # A shared development disk: evict only when it is really full, never collect
        # the images built here (they cannot be pulled again).
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "localStorageCapacityIsolation": True,
        # How often the kubelet measures emptyDir usage (default 1m): a loader over its
        # /tmp sizeLimit is evicted within seconds, so tests of that wait seconds.
        "volumeStatsAggPeriod": "5s",
        "serializeImagePulls": False,
    }
    return write_if_changed(paths.root / "kubelet.yaml", yaml.safe_dump(config, sort_keys=False))


def _kube_proxy_config(paths: NodePaths, kubeconfig: Path) -> Path:
    L = paths.layout
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": L.network.subnet,
        "healthzBindAddress": f"127.0.0.1:{L.ports.kube_proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{L.ports.kube_proxy_metrics}",
        # Zero: leave the machine's conntrack sysctls alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "nodePortAddresses": [f"{L.network.host_ip}/32"],
    }
    return write_if_changed(paths.root / "kube-proxy.yaml", yaml.safe_dump(config, sort_keys=False))


# -- the components ---------------------------------------------------------------------


def containerd_ready(paths: NodePaths) -> bool:
    done = subprocess.run(
        [CTR, "--address", str(paths.containerd_socket), "version"],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def containerd(layout: Layout, pause_image: str) -> Component:
    paths = NodePaths(layout)
    config = _containerd_config(paths, pause_image)
    return Component(
        "containerd", [CONTAINERD, "--config", str(config)], lambda: containerd_ready(paths)
    )


def node_ready(layout: Layout, bin_dir: Path) -> bool:
    done = subprocess.run(
        [str(bin_dir / "kubectl"), f"--kubeconfig={layout.kubeconfig}", "get", "node",
         NODE_NAME, "-o", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return False
    conditions = json.loads(done.stdout).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def kubelet(layout: Layout, pki: pki_mod.Pki, bin_dir: Path) -> Component:
    paths = NodePaths(layout)
    kubeconfig = write_kubeconfig(paths.root / "kubelet.kubeconfig", layout, pki, "kubelet")
    return Component(
        "kubelet",
        [
            str(bin_dir / "kubelet"),
            f"--config={_kubelet_config(paths, pki)}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={paths.sub('kubelet')}",
            f"--cert-dir={paths.sub('kubelet-pki')}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={layout.network.host_ip}",
            "--v=1",
        ],
        lambda: node_ready(layout, bin_dir),
        probes_itself=False,  # the Node's Ready condition outlives a stopped kubelet
    )


def kube_proxy(layout: Layout, pki: pki_mod.Pki, bin_dir: Path) -> Component:
    paths = NodePaths(layout)
    kubeconfig = write_kubeconfig(paths.root / "kube-proxy.kubeconfig", layout, pki, "kube-proxy")
    return Component(
        "kube-proxy",
        [str(bin_dir / "kube-proxy"), f"--config={_kube_proxy_config(paths, kubeconfig)}", "--v=1"],
        lambda: http_ok(f"http://127.0.0.1:{layout.ports.kube_proxy_healthz}/healthz"),
    )


# -- a container's processes, for tests --------------------------------------------------


def container_cgroup(container_id: str, controller: str = "freezer") -> Path:
    """A running container's cgroup in one v1 controller's hierarchy (the kubelet's
    cgroupfs layout: kubepods/<qos>/pod<uid>/<container id>)."""
    cid = container_id.split("://", 1)[-1]
    found = list((CGROUP_ROOT / controller / "kubepods").glob(f"**/{cid}"))
    if not found:
        raise DevEnvError(f"no {controller} cgroup for container {cid}")
    return found[0]


def container_pids(container_id: str) -> list[int]:
    """The host PIDs of a running container's processes."""
    procs = container_cgroup(container_id) / "cgroup.procs"
    return [int(pid) for pid in procs.read_text().split()]


def freeze(container_id: str, frozen: bool) -> None:
    """Pause (or resume) every process of a container at once, as `docker pause` does."""
    state = container_cgroup(container_id) / "freezer.state"
    state.write_text("FROZEN" if frozen else "THAWED")


# -- host state: record before, remove after --------------------------------------------


def record_host_paths(layout: Layout) -> None:
    """Which of HOST_PATHS existed before this environment first came up. Kept with the
    environment's state, so that an `up` after a crash does not take our own leftovers
    for the machine's, and `leftovers` can still tell after a `down`."""
    paths = NodePaths(layout)
    if paths.host_paths_record.exists():
        return
    paths.root.mkdir(parents=True, exist_ok=True)
    existing = [p for p in HOST_PATHS if os.path.lexists(p)]
    paths.host_paths_record.write_text(json.dumps(existing))


def _ours_host_paths(layout: Layout) -> list[str]:
    record = NodePaths(layout).host_paths_record
    before = set(json.loads(record.read_text())) if record.exists() else set(HOST_PATHS)
    return [p for p in HOST_PATHS if p not in before and os.path.lexists(p)]


def _mounts_under(*roots: Path) -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with spaces and the like escaped as octal.
        point = line.split()[4].encode().decode("unicode_escape")
        if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
            found.append(point)
    return found


def _mount_roots(layout: Layout) -> list[Path]:
    roots = [layout.root.resolve()]
    return [*roots, Path("/run/containerd")] if ran_a_node(layout) else roots


def _kubepods_cgroups() -> list[Path]:
    if not CGROUP_ROOT.is_dir():
        return []
    return [h / "kubepods" for h in CGROUP_ROOT.iterdir() if (h / "kubepods").is_dir()]


def _iptables_save(flavour: str) -> str:
    tool = shutil.which(f"{flavour}-save")
    if tool is None:
        return ""
    done = subprocess.run([tool], capture_output=True, text=True, check=False)
    return done.stdout if done.returncode == 0 else ""


def _ours(line: str) -> bool:
    """A chain of ours (":KUBE-SERVICES - [0:0]"), a rule in one, or a jump to one."""
    if line.startswith(":"):
        return line[1:].startswith(OUR_CHAIN_PREFIXES)
    words = line.split()
    return line.startswith("-A ") and any(w.startswith(OUR_CHAIN_PREFIXES) for w in words[1:])


def _our_iptables(flavour: str) -> Iterator[tuple[str, str]]:
    """(table, line) of each of our chains and each rule that is in or jumps to one."""
    table = ""
    for line in _iptables_save(flavour).splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif _ours(line):
            yield table, line


def _remove_iptables() -> None:
    for flavour in IPTABLES_FLAVOURS:
        tool = shutil.which(flavour)
        if tool is None:
            continue
        found = list(_our_iptables(flavour))
        # Rules first (those in built-in chains jump to ours), then empty the chains, then
        # delete them: a chain still referenced cannot be deleted.
        for table, line in found:
            if line.startswith("-A ") and not line[3:].startswith(OUR_CHAIN_PREFIXES):
                args = shlex.split(line)
                subprocess.run(
                    [tool, "-t", table, "-D", *args[1:]], capture_output=True, check=False
                )
        chains = [(t, line[1:].split()[0]) for t, line in found if line.startswith(":")]
        for table, chain in chains:
            subprocess.run([tool, "-t", table, "-F", chain], capture_output=True, check=False)
        for table, chain in chains:
            subprocess.run([tool, "-t", table, "-X", chain], capture_output=True, check=False)


def _remove_cgroups() -> None:
    # Bottom-up: a cgroup can only be removed once its children are gone, and only when
    # no process is left in it (every container has been stopped by then).
    for top in _kubepods_cgroups():
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def _processes_mentioning(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _shims(layout: Layout) -> list[int]:
    """containerd's shims (one per Pod) name its socket; they outlive containerd itself."""
    return _processes_mentioning(str(NodePaths(layout).containerd_socket.resolve()))


def _crictl(bin_dir: Path, paths: NodePaths, *args: str) -> subprocess.CompletedProcess:
    endpoint = f"unix://{paths.containerd_socket}"
    return subprocess.run(
        [str(bin_dir / "crictl"), "--runtime-endpoint", endpoint, "--image-endpoint", endpoint,
         "--timeout", "60s", *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def remove_pods(layout: Layout, bin_dir: Path) -> None:
    """Stop and remove every Pod sandbox through the CRI, as the kubelet would: each
    container is stopped, CNI releases the Pod's address and veth, the network namespace
    is unmounted. containerd must still run; the kubelet must not (it would restart them)."""
    paths = NodePaths(layout)
    if containerd_ready(paths):
        done = _crictl(bin_dir, paths, "rmp", "--force", "--all")
        if done.returncode != 0:
            print(f"devenv: crictl rmp failed: {done.stderr.strip()}", flush=True)


def teardown(layout: Layout, bin_dir: Path | None) -> None:
    """After containerd, the kubelet and kube-proxy have stopped: whatever they left on
    the machine goes (kube-proxy's and the kubelet's iptables chains, cgroups, shims,
    mounts, the bridge, host paths they made)."""
    for pid in _shims(layout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _shims(layout) and time.monotonic() < deadline:
        time.sleep(0.1)
    for point in sorted(_mounts_under(*_mount_roots(layout)), key=len, reverse=True):
        if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    delete_bridge(layout.network)
    if not ran_a_node(layout):
        return
    if bin_dir is not None and (bin_dir / "kube-proxy").exists():
        subprocess.run([str(bin_dir / "kube-proxy"), "--cleanup"], capture_output=True, check=False)
    _remove_iptables()
    _remove_cgroups()
    for path in _ours_host_paths(layout):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def leftovers(layout: Layout) -> list[str]:
    """What of the node is still on the machine: empty after a clean `down`."""
    found = [f"process {pid}" for pid in _processes_mentioning(str(layout.root.resolve()))]
    found += [f"mount {m}" for m in _mounts_under(*_mount_roots(layout))]
    if bridge_exists(layout.network):
        found.append(f"bridge {layout.network.bridge}")
    if not ran_a_node(layout):
        return found
    for flavour in IPTABLES_FLAVOURS:
        found += [f"{flavour} {table}: {line}" for table, line in _our_iptables(flavour)]
    found += [f"cgroup {c}" for c in _kubepods_cgroups()]
    found += [f"host path {p}" for p in _ours_host_paths(layout)]
    return found
