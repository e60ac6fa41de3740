"""The container images of the dev environment's node, built on this machine.

No container registry is reachable here, so everything the node runs is made locally with
buildah and loaded into the node's containerd:

- the base image (the Dockerfile's PYTHON_IMAGE): Debian bookworm's Python 3.11, made
  from Debian packages with mmdebstrap, with only what the image's two stages need;
- the product image: the repository's Dockerfile on top of that base, tagged with the
  name the Helm chart gives it (values.yaml image.repository : Chart.yaml appVersion), so
  the chart's manifests run it unchanged (imagePullPolicy Never on the dev node);
- the pause image: containerd's sandbox_image, a static Go program (devenv/pause).

The base and pause images are cached outside the clone, keyed by a hash of what makes
them: the committed image in buildah's storage (tag = the hash) and the artifact it is
made from (the mmdebstrap tarball, the pause binary) in $PRODUCTIMPORT_CACHE/images.
The product image relies on buildah's layer cache instead: a code change rebuilds only
the layers after the project's COPY.

    python -m devenv.images build    # (make image) base and pause if needed, then product
    python -m devenv.images names    # the three image references
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import yaml

from devenv.component import DevEnvError

REPO = Path(__file__).resolve().parent.parent
DEBIAN_PACKAGES = REPO / "devenv" / "debian-packages.sh"
PAUSE_SOURCE = REPO / "devenv" / "pause"
CHART = REPO / "charts" / "productimport"

# The host's CA bundle, bind-mounted (read-only) into the build's RUN steps only: HTTPS
# from this machine passes an intercepting proxy that this bundle trusts, and pip in the
# builder stage must trust it too. A RUN mount never becomes part of a layer.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# --- the base image -------------------------------------------------------------------

BASE_SUITE = "bookworm"
# Bump when the recipe changes in a way the mmdebstrap command line does not show (the
# buildah steps after it, say), or to pick up Debian's security updates: the key is made
# from the recipe, not from the archive's current package versions.
BASE_RECIPE_VERSION = 1
# The essential set (no apt: nothing installs packages into the image later) plus what
# the Dockerfile uses: `python` (python-is-python3), `python -m venv` with pip
# (python3-venv, whose ensurepip carries the pip wheel), groupadd/useradd (passwd),
# ca-certificates for HTTPS, and libstdc++6, which the duckdb wheel links against (the
# manylinux policy lets wheels take it from the system).
BASE_PACKAGES = (
    "python3",
    "python3-venv",
    "python-is-python3",
    "ca-certificates",
    "passwd",
    "libstdc++6",
)
# dpkg never unpacks these (also kept in the image's /etc/dpkg/dpkg.cfg.d/99mmdebstrap,
# which documents it): documentation, manual pages and translations have no use in a
# container; the copyright files stay because the image is distributed.
BASE_DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
)
# After everything is installed: perl-base (11 MB) and debconf (which needs it) only
# serve package maintainer scripts, and nothing installs packages in this image. dpkg
# stays, so /var/lib/dpkg/status still lists what the image holds (for scanners).
BASE_CUSTOMIZE_HOOKS = (
    'chroot "$1" dpkg --purge --force-remove-essential --force-depends debconf perl-base',
    'rm -rf "$1/var/cache/debconf" "$1"/var/lib/dpkg/*-old',
)
# What a `FROM scratch` image lacks and the Dockerfile relies on: `ENV PATH=/opt/venv/
# bin:$PATH` must extend a real PATH, and C.UTF-8 (built into glibc) keeps Python's
# text I/O in UTF-8, as in the python:3.11-slim images this base stands in for.
BASE_CONFIG = (
    "--env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "--env=LANG=C.UTF-8",
    '--cmd=["python3"]',
)
# mmdebstrap's own hook that sets up merged /usr the way debootstrap does: without it apt
# satisfies init-system-helpers' "usrmerge | usr-is-merged" with usrmerge, which pulls
# in the whole of perl (57 MB).
MERGED_USR_HOOKS = "/usr/share/mmdebstrap/hooks/merged-usr"

# --- the pause image -------------------------------------------------------------------

PAUSE_LDFLAGS = "-s -w"
# Like registry.k8s.io/pause: it needs no privileges, so it runs as nobody.
PAUSE_USER = "65535:65535"


class ImageError(DevEnvError):
    """A step of an image build or load failed; the message names the command and ends
    with the end of its output."""


def cache_dir() -> Path:
    """$PRODUCTIMPORT_CACHE/images (default ~/.cache/productimport/images): outside the
    clone, so a fresh clone or `git clean` keeps the base tarball and pause binary."""
    root = os.environ.get("PRODUCTIMPORT_CACHE") or Path.home() / ".cache" / "productimport"
    path = Path(root) / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


_lock_depth = 0


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """One build at a time per cache directory: `make image` and a test session (or two
    of them) would otherwise write the same tarball and step records at once. Reentrant,
    since building the product ensures the base first."""
    global _lock_depth
    if _lock_depth:
        _lock_depth += 1
        try:
            yield
        finally:
            _lock_depth -= 1
        return
    with (cache_dir() / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _lock_depth = 1
        try:
            yield
        finally:
            _lock_depth = 0


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _run(
    cmd: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> str:
    """Runs cmd and returns its stdout; stderr is kept for the error message only (a
    failing build says why there), so long outputs never reach the caller's terminal."""
    try:
        done = subprocess.run(
            list(cmd),
            cwd=cwd,
            env=None if env is None else {**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImageError(f"`{shlex.join(cmd)}` failed: {exc}") from None
    if done.returncode != 0:
        output = _tail("\n".join(o.rstrip() for o in (done.stdout, done.stderr) if o.strip()))
        raise ImageError(f"`{shlex.join(cmd)}` exited {done.returncode}:\n{output}")
    return done.stdout


@functools.cache
def ensure_tools() -> None:
    """Installs buildah, mmdebstrap and containerd (for ctr) on a fresh machine; once a
    process, and then only a dpkg query."""
    _run([str(DEBIAN_PACKAGES)])


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def image_id(ref: str) -> str | None:
    """The ID of ref in buildah's storage, or None if it is not there."""
    done = subprocess.run(
        ["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", ref],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None if done.returncode == 0 else None


def image_size_mb(ref: str) -> float:
    """The image's size in MB (10^6 bytes; its layers, uncompressed), as `buildah images`
    reports it: rounded to three digits, which is all it offers."""
    # One line per name of the image (all of them, whichever name is asked for).
    size = _run(["buildah", "images", "--format", "{{.Size}}", ref]).strip().split("\n")[0]
    match = re.fullmatch(r"([\d.]+)\s*([kMGT]?B)", size)
    if not match:
        raise ImageError(f"buildah images: unexpected size {size!r} for {ref}")
    scale = {"B": 1e-6, "kB": 1e-3, "MB": 1.0, "GB": 1e3, "TB": 1e6}[match[2]]
    return float(match[1]) * scale


def _commit_scratch(ref: str, add: Sequence[str], config: Sequence[str]) -> None:
    """Makes ref from scratch: `buildah add` (a tarball is unpacked) or `buildah copy`
    of each (verb, source, destination) triple in add, then `buildah config`."""
    container = _run(["buildah", "from", "scratch"]).strip()
    try:
        for verb, source, destination in zip(add[::3], add[1::3], add[2::3], strict=True):
            _run(["buildah", verb, container, source, destination])
        _run(["buildah", "config", *config, container])
        _run(["buildah", "commit", "--quiet", "--rm", container, ref])
    except BaseException:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
        raise


# --- base ------------------------------------------------------------------------------


def base_command(target: Path) -> list[str]:
    """The mmdebstrap command that makes the base image's root filesystem as a tarball."""
    return [
        "mmdebstrap",
        "--variant=essential",
        f"--include={','.join(BASE_PACKAGES)}",
        f"--hook-dir={MERGED_USR_HOOKS}",
        *(f"--dpkgopt={option}" for option in BASE_DPKG_OPTIONS),
        *(f"--customize-hook={hook}" for hook in BASE_CUSTOMIZE_HOOKS),
        # No device nodes in the layer: the container runtime provides /dev.
        "--skip=output/dev",
        "--format=tar",
        BASE_SUITE,
        str(target),
    ]


def base_key() -> str:
    return _key(BASE_RECIPE_VERSION, base_command(Path("TARGET")), BASE_CONFIG)


def base_ref() -> str:
    return f"localhost/productimport-base:{base_key()}"


def ensure_base_image() -> str:
    """The base image's reference, made first if buildah's storage lacks it: from the
    cached tarball if there is one, else by mmdebstrap (about a minute, downloading
    ~40 MB of packages)."""
    ensure_tools()
    ref = base_ref()
    with _build_lock():
        if image_id(ref):
            return ref
        tarball = cache_dir() / f"base-{base_key()}.tar"
        if not tarball.exists():
            print("images: making the base image with mmdebstrap (a minute)", file=sys.stderr)
            partial = tarball.with_name(tarball.name + ".part")
            partial.unlink(missing_ok=True)
            _run(base_command(partial))
            partial.rename(tarball)
            # Only the current recipe's tarball is worth its ~100 MB.
            for old in cache_dir().glob("base-*.tar"):
                if old != tarball:
                    old.unlink()
        _commit_scratch(ref, ["add", str(tarball), "/"], BASE_CONFIG)
    return ref


# --- pause -----------------------------------------------------------------------------


def pause_key() -> str:
    """A hash of the pause program's sources (its Go files and module files) and of how
    it is built and packed."""
    files = [PAUSE_SOURCE / "go.mod", PAUSE_SOURCE / "go.sum", *PAUSE_SOURCE.glob("*.go")]
    sources = {p.name: p.read_bytes().hex() for p in sorted(files) if p.is_file()}
    return _key(sources, PAUSE_LDFLAGS, PAUSE_USER)


def pause_ref() -> str:
    return f"localhost/productimport-pause:{pause_key()}"


def ensure_pause_image() -> str:
    """The pause image's reference (containerd's sandbox_image), built if missing."""
    ensure_tools()
    ref = pause_ref()
    with _build_lock():
        if image_id(ref):
            return ref
        binary = cache_dir() / f"pause-{pause_key()}"
        if not binary.exists():
            partial = binary.with_name(binary.name + ".part")
            _run(
                ["go", "build", "-trimpath", "-ldflags", PAUSE_LDFLAGS, "-o", str(partial), "."],
                cwd=PAUSE_SOURCE,
                # Static (no libc in an empty image); only this module, whatever go.work
                # or toolchain a parent directory or the environment names.
                env={"CGO_ENABLED": "0", "GOWORK": "off", "GOTOOLCHAIN": "local"},
            )
            partial.rename(binary)
            for old in cache_dir().glob("pause-*"):
                if old != binary:
                    old.unlink()
        _commit_scratch(
            ref,
            ["copy", str(binary), "/pause"],
            ['--entrypoint=["/pause"]', f"--user={PAUSE_USER}"],
        )
    return ref


# --- product ---------------------------------------------------------------------------


def product_ref() -> str:
    """The image the chart deploys: image.repository, and image.tag or else the chart's
    appVersion (as the chart's productimport.image helper does)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    tag = values["image"].get("tag") or chart["appVersion"]
    return f"{values['image']['repository']}:{tag}"


def product_build_command(base: str, ref: str) -> list[str]:
    """The buildah command that builds ref from the repository's Dockerfile on base.

    No REVISION build argument: buildah (1.28) puts a build argument's value in the cache
    key of a stage's RUN steps only, so a new commit would re-run the runtime stage from
    its first RUN (copying the whole virtualenv again), and after the last RUN it would
    not count at all (a LABEL step is reused with the old value). VERSION changes only
    with the chart's appVersion, so rebuilding the runtime stage then is fine.
    """
    return [
        "buildah",
        "bud",
        "--layers",
        # Also remove the intermediate container of a step that fails.
        "--force-rm",
        # Docker's format keeps the HEALTHCHECK (the OCI image config has no such field).
        "--format",
        "docker",
        # The base exists only in local storage; never ask a registry.
        "--pull=never",
        # pip in the builder stage reaches the package index from the host's network.
        "--network",
        "host",
        "-v",
        f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro",
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        "--build-arg",
        f"VERSION={ref.rpartition(':')[2]}",
        "-t",
        ref,
        "-f",
        "Dockerfile",
        ".",
    ]


def _step_images(output: str) -> set[str]:
    """The full IDs of the images the steps of a `buildah bud --layers` ended in (made or
    taken from the cache), from its output's `--> ID` lines (short IDs, mostly)."""
    short = set(re.findall(r"^--> (?:Using cache )?([0-9a-f]{10,64})$", output, re.M))
    every = _run(["buildah", "images", "--all", "--no-trunc", "--quiet"]).split()
    ids = [i.removeprefix("sha256:") for i in every]
    return {i for i in ids if any(i.startswith(s) for s in short)}


def _forget_previous_build(ref: str, steps: set[str]) -> None:
    """Removes the step images of the previous build of ref that this build did not use.

    Each code change leaves a new copy of the virtualenv (a 170 MB layer) behind in
    buildah's storage; without this, a day of rebuilds would fill the disk. Only images
    this module's own previous build of ref ended its steps in are candidates, so the
    layer cache of this build (and anything else in the storage) stays.
    """
    record = cache_dir() / (re.sub(r"[^A-Za-z0-9_.-]", "_", ref) + ".steps")
    previous = set(record.read_text().split()) if record.exists() else set()
    for stale in sorted(previous - steps):
        # Fails harmlessly for an image a container still uses; it stays listed.
        subprocess.run(["buildah", "rmi", stale], capture_output=True, check=False)
    record.write_text("".join(f"{i}\n" for i in sorted(steps)))


def build_product_image() -> str:
    """Builds the product image from the checkout (the base first if needed) and returns
    its reference; buildah's layer cache makes an unchanged tree a few seconds' work and
    a code change a rebuild of the last builder step and the runtime stage."""
    ensure_tools()
    ref = product_ref()
    with _build_lock():
        base = ensure_base_image()
        output = _run(product_build_command(base, ref), cwd=REPO)
        _forget_previous_build(ref, _step_images(output))
    return ref


# --- loading into containerd -----------------------------------------------------------


def _ctr(address: Path) -> list[str]:
    # k8s.io: the namespace containerd's CRI plugin (and so the kubelet) looks in.
    return ["ctr", "--address", str(address), "--namespace", "k8s.io"]


IMPORT_ATTEMPTS = 3


def load(image_ref: str, ctr_address: Path, stamp_dir: Path) -> bool:
    """Loads image_ref from buildah's storage into the containerd at ctr_address, under
    that same name and unpacked for its overlayfs snapshotter (what the kubelet needs to
    start it with imagePullPolicy Never). Skipped when the image ID recorded in stamp_dir
    for image_ref is unchanged and containerd still lists the name. Returns whether it
    imported."""
    current = image_id(image_ref)
    if current is None:
        raise ImageError(f"{image_ref} is not in buildah's storage (build it first)")
    stamp = stamp_dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", image_ref) + ".id")
    listed = _run([*_ctr(ctr_address), "images", "ls", "--quiet"]).split()
    if image_ref in listed and stamp.exists() and stamp.read_text().strip() == current:
        return False
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="load-") as tmp:
        # A docker-archive names the image in its manifest (RepoTags), and ctr import
        # keeps that name; an OCI archive carries only the tag.
        archive = Path(tmp) / "image.tar"
        _run(["buildah", "push", "--quiet", image_ref, f"docker-archive:{archive}:{image_ref}"])
        # ctr unpacks what it imports into its default snapshotter, overlayfs. The tag
        # moving off the previous build leaves that build's snapshots unreferenced, and
        # containerd 1.6 may collect one while this unpack stacks onto it ("parent
        # snapshot ... does not exist: not found", seen on a dev-up after a code change):
        # the next attempt unpacks from what is there then.
        for attempt in range(IMPORT_ATTEMPTS):
            try:
                _run([*_ctr(ctr_address), "images", "import", str(archive)])
                break
            except ImageError as exc:
                if "does not exist" not in str(exc) or attempt == IMPORT_ATTEMPTS - 1:
                    raise
    stamp_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(current + "\n")
    return True


# --- command line ----------------------------------------------------------------------


def _timed(label: str, step: Callable[[], str]) -> str:
    began = time.monotonic()
    ref = step()
    print(f"images: {label} {ref} ({time.monotonic() - began:.1f}s)", flush=True)
    return ref


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv.images", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build the base and pause images if needed, then the product")
    sub.add_parser("names", help="print the base, pause and product image references")
    args = parser.parse_args(argv)
    if args.command == "names":
        print(f"base     {base_ref()}\npause    {pause_ref()}\nproduct  {product_ref()}")
        return 0
    try:
        refs = [
            _timed("base   ", ensure_base_image),
            _timed("pause  ", ensure_pause_image),
            _timed("product", build_product_image),
        ]
        for ref in refs:
            print(f"images: {image_size_mb(ref):6.1f} MB  {ref}", flush=True)
    except ImageError as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
