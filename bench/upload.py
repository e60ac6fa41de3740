"""`make bench-upload` (part of `make bench`): a 1 GiB upload through the API vs. MinIO direct.

Both run against the dev environment's real MinIO (started by devenv if needed, without
the operator, so no import competes for the CPU while we measure):
- direct: a fresh process puts the file with the minio client (`fput_object`, multipart),
  the fastest a client of this machine can store it;
- API: `productimport-api` runs as its own process; a fresh client process streams the
  same file to it as multipart/form-data (the native route, dryRun), and the API streams
  it on to MinIO in parts. The API's peak RSS is read from /proc (VmHWM) afterwards.
Throughputs are compared within this one run (the machine is shared and noisy).

Targets (issue 5): API peak RSS < 150 MB; API throughput >= 0.5x the direct put.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.measure import run

OUT = Path(os.environ.get("BENCH_OUT", Path(__file__).resolve().parent / "out"))
TARGET_RSS = 150 * 2**20
TARGET_RATIO = 0.5
API_PORT = 18190

DIRECT = """
import sys
from minio import Minio
import os
c = Minio(os.environ["MINIO_ENDPOINT"], os.environ["MINIO_ACCESS_KEY"],
          os.environ["MINIO_SECRET_KEY"], secure=False)
if not c.bucket_exists("bench"):
    c.make_bucket("bench")
c.fput_object("bench", "direct/" + os.path.basename(sys.argv[1]), sys.argv[1],
              part_size=16 * 1024 * 1024)
"""

CLIENT = """
import sys, httpx
url, token, path = sys.argv[1:4]
with open(path, "rb") as f:
    r = httpx.post(url, headers={"Authorization": "Bearer " + token},
                   files={"file": ("products.csv", f, "text/csv")},
                   data={"dryRun": "true"}, timeout=3600)
print(r.status_code, r.text[:300])
sys.exit(0 if r.status_code == 202 else 1)
"""


def make_file(size: int) -> Path:
    """A CSV of realistic product rows, repeated up to `size` bytes (made once, cached)."""
    path = OUT / "data" / f"upload-{size}.csv"
    if path.exists() and path.stat().st_size >= size:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        f'SKU-{i:08d},"Product {i}, with a comma","A ""quoted"" description\nover two '
        f'lines",live,physical,{i % 997}.99,EUR\n'
        for i in range(20_000)
    ]
    block = "sku,name,description,status,commodity_type,price,currency\n" + "".join(rows)
    data = block.encode()
    with path.open("wb") as f:
        written = 0
        while written < size:
            f.write(data)
            written += len(data)
    return path


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def wait_healthy(url: str, proc: subprocess.Popen) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the API did not become healthy")


def _remove_objects(values: dict[str, str], prefixes: list[tuple[str, str]]) -> None:
    """A gigabyte per run would otherwise pile up in the dev environment's MinIO."""
    from minio import Minio

    client = Minio(
        values["MINIO_ENDPOINT"], values["MINIO_ACCESS_KEY"], values["MINIO_SECRET_KEY"],
        secure=False,
    )  # fmt: skip
    for bucket, prefix in prefixes:
        if client.bucket_exists(bucket):
            for obj in client.list_objects(bucket, prefix=prefix, recursive=True):
                client.remove_object(bucket, obj.object_name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=int(os.environ.get("BENCH_UPLOAD_MIB", 1024)))
    args = parser.parse_args(argv)

    from devenv.controlplane import DevEnv

    env = DevEnv()
    values = env.up(with_services=False, with_node=False)  # no Pods: MinIO is enough
    base = {**os.environ, **values}
    path = make_file(args.mib * 2**20)
    size = path.stat().st_size
    namespace = f"bench-upload-{secrets.token_hex(3)}"
    env.kubectl("create", "namespace", namespace)
    token = secrets.token_urlsafe(24)
    api_env = {
        **base,
        "PRODUCTIMPORT_API_HOST": "127.0.0.1",
        "PRODUCTIMPORT_API_PORT": str(API_PORT),
        "PRODUCTIMPORT_API_LOG_LEVEL": "WARNING",
        "PRODUCTIMPORT_API_TOKENS": json.dumps(
            {"tokens": [{"name": "bench", "token": token, "namespaces": [namespace]}]}
        ),
        "PRODUCTIMPORT_API_MAX_UPLOAD_BYTES": str(size + 2**20),
    }
    api_bin = str(Path(sys.executable).parent / "productimport-api")
    print(f"upload benchmark: {size / 2**20:,.0f} MiB file {path}", flush=True)
    try:
        direct = run([sys.executable, "-c", DIRECT, str(path)], env=base).check()
        api = subprocess.Popen([api_bin], env=api_env, stdin=subprocess.DEVNULL)
        try:
            wait_healthy(f"http://127.0.0.1:{API_PORT}/healthz", api)
            url = (
                f"http://127.0.0.1:{API_PORT}/api/v1/namespaces/{namespace}/catalogs/bench/imports"
            )
            through_api = run([sys.executable, "-c", CLIENT, url, token, str(path)], env=base)
            through_api.check()
            api_rss = vm_hwm(api.pid)
        finally:
            api.terminate()
            api.wait(timeout=30)
    finally:
        env.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        _remove_objects(values, [("bench", "direct/"), ("uploads", f"{namespace}/")])

    mb = size / 1e6
    direct_rate, api_rate = mb / direct.seconds, mb / through_api.seconds
    ratio = api_rate / direct_rate
    print(
        f"  direct: minio fput_object                  {direct.seconds:7.2f} s  "
        f"{direct_rate:7.1f} MB/s  client RSS {direct.peak_rss_mb:6.0f} MB"
    )
    print(
        f"  API: multipart upload -> MinIO (streamed)  {through_api.seconds:7.2f} s  "
        f"{api_rate:7.1f} MB/s  API RSS    {api_rss / 2**20:6.0f} MB   "
        f"client RSS {through_api.peak_rss_mb:.0f} MB"
    )
    ok_rss, ok_ratio = api_rss < TARGET_RSS, ratio >= TARGET_RATIO
    print("targets (issue 5)")
    print(
        f"  [{'OK' if ok_rss else 'MISS'}] API peak RSS < 150 MB           {api_rss / 2**20:.0f} MB"
    )
    print(f"  [{'OK' if ok_ratio else 'MISS'}] API throughput >= 0.5x direct  {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
