"""`python -m devenv up|down|status`: the dev environment's command line (make dev-up/down)."""

from __future__ import annotations

import argparse
import sys
import time

from devenv.controlplane import DevEnv, DevEnvError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start everything (idempotent) and write .dev/env")
    sub.add_parser("down", help="stop everything that `up` started")
    sub.add_parser("status", help="list the components and their PIDs")
    put = sub.add_parser("put", help="copy a local file into the dev MinIO (BUCKET/KEY)")
    put.add_argument("file")
    put.add_argument("target", help="BUCKET/KEY, e.g. uploads/shop-a/products.csv")
    args = parser.parse_args(argv)
    env = DevEnv()
    try:
        if args.command == "up":
            began = time.monotonic()
            env.up()
            took = time.monotonic() - began
            print(f"devenv: up in {took:.1f}s; now run: . {env.layout.env_file}")
        elif args.command == "down":
            stopped = env.down()
            print(f"devenv: stopped {', '.join(stopped) if stopped else 'nothing (not running)'}")
        elif args.command == "put":
            bucket, _, key = args.target.partition("/")
            if not key:
                raise DevEnvError("put needs BUCKET/KEY")
            client = env.minio_client()
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
            client.fput_object(bucket, key, args.file)
            print(f"devenv: put {args.file} -> s3://{bucket}/{key}")
        else:
            for name, pid in env.status().items():
                print(f"{name:26} {'running, pid ' + str(pid) if pid else 'stopped'}")
    except DevEnvError as exc:
        print(f"devenv: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
