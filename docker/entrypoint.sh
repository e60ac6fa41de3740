#!/bin/sh
# The image's entrypoint: picks one of the three roles of the one productimport image.
#
#   api                 the upload API (productimport-api)
#   operator            the Kopf operator (productimport-operator)
#   loader ARGS...      the loader/CLI (productimport ARGS..., e.g. `loader import SRC ...`)
#   healthcheck         the image's HEALTHCHECK (see below)
#   anything else       run as a command (`sh`, `productimport --help`, ...)
#
# Each role is exec'd, so it runs as PID 1 and gets the container's signals itself.
set -eu

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
}

# Healthy when the role's /healthz answers 2xx; the loader and one-off commands are batch
# processes whose health is their exit code, so they always pass. The role is read from
# the command line of the container's main process (PID 1, or PRODUCTIMPORT_HEALTHCHECK_PID),
# because a HEALTHCHECK runs as a separate process and a Kubernetes `command` may bypass
# this script altogether.
healthcheck() {
    pid=${PRODUCTIMPORT_HEALTHCHECK_PID:-1}
    cmdline=$(tr '\000' ' ' <"/proc/$pid/cmdline")
    case "$cmdline" in
        *productimport-api*)
            port=${PRODUCTIMPORT_API_PORT:-8080} ;;
        *productimport-operator*)
            port=${PRODUCTIMPORT_OPERATOR_HEALTH_PORT:-8081} ;;
        *)
            exit 0 ;;
    esac
    exec python -c '
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=4) as resp:
        sys.exit(0 if 200 <= resp.status < 300 else 1)
except Exception as exc:
    print(f"unhealthy: {sys.argv[1]}: {exc}", file=sys.stderr)
    sys.exit(1)
' "http://127.0.0.1:$port/healthz"
}

role=${1:-api}
[ "$#" -gt 0 ] && shift
case "$role" in
    api) exec productimport-api "$@" ;;
    operator) exec productimport-operator "$@" ;;
    loader) exec productimport "$@" ;;
    healthcheck) healthcheck ;;
    help | -h | --help) usage ;;
    *) exec "$role" "$@" ;;
esac
