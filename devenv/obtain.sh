#!/usr/bin/env bash
# Builds (once) and caches the dev environment's binaries: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl, crictl, minio
# and helm, all from their Go modules.
#
# Idempotent: the binaries land in $PRODUCTIMPORT_CACHE/bin/<hash of the pins>, outside
# the clone, and a second run with the same pins only prints that directory. Go's own
# module and build caches (~/go/pkg/mod, ~/.cache/go-build) make a rebuild after a pin
# change incremental. Prints the bin directory on its last line of stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${PRODUCTIMPORT_CACHE:-$HOME/.cache/productimport}"
pins=$(cat "$here/versions.env" "$here/go/go.mod" "$here/go/go.sum" "$0" | sha256sum | cut -c1-16)
bin="$cache/bin/$pins"
want=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl crictl
  minio helm)

have_all() { for b in "${want[@]}"; do [[ -x "$bin/$b" ]] || return 1; done; }
if have_all; then echo "$bin"; exit 0; fi

command -v go >/dev/null || { echo "obtain: 'go' is not on PATH; install Go >= 1.25" >&2; exit 1; }
mkdir -p "$bin.partial"
log() { echo "obtain: $*" >&2; }
export GOFLAGS=-trimpath CGO_ENABLED=0

major_minor=${K8S_VERSION#v}; major=${major_minor%%.*}; minor=${major_minor#*.}; minor=${minor%%.*}
vpkg=k8s.io/component-base/version
k8s_ldflags="-s -w -X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=$major -X $vpkg.gitMinor=$minor \
 -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"

build_k8s() {
  local name=$1 pkg=$2
  [[ -x "$bin.partial/$name" ]] && return 0
  log "building $name ($pkg, first time only; several minutes)"
  (cd "$here/go" && go build -ldflags "$k8s_ldflags" -o "$bin.partial/$name" "$pkg") >&2
}
build_k8s etcd "$ETCD_MODULE"
build_k8s kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build_k8s kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build_k8s kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
build_k8s kubelet k8s.io/kubernetes/cmd/kubelet
build_k8s kube-proxy k8s.io/kubernetes/cmd/kube-proxy
build_k8s kubectl k8s.io/kubernetes/cmd/kubectl

if [[ ! -x "$bin.partial/minio" ]]; then
  log "building minio $MINIO_VERSION (first time only)"
  GOBIN="$bin.partial" go install -ldflags "-s -w" "github.com/minio/minio@$MINIO_VERSION" >&2
fi
if [[ ! -x "$bin.partial/crictl" ]]; then
  log "building crictl $CRI_TOOLS_VERSION (first time only)"
  GOBIN="$bin.partial" go install -ldflags "-s -w" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$CRI_TOOLS_VERSION" >&2
fi
if [[ ! -x "$bin.partial/helm" ]]; then
  log "building helm $HELM_VERSION (first time only)"
  GOBIN="$bin.partial" go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
fi
rm -rf "$bin"
mv "$bin.partial" "$bin"
have_all || { echo "obtain: build finished but binaries are missing in $bin" >&2; exit 1; }
echo "$bin"
