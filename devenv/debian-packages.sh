#!/usr/bin/env bash
# Installs the Debian packages the local node and the image build need, only when one is
# missing (a second run is a dpkg query, no network): containerd, runc and the CNI plugins
# run the Pods; buildah builds the images; mmdebstrap makes the base image from Debian
# packages (no container registry is reachable here). Needs root (or sudo) the first time.
set -euo pipefail
packages=(containerd runc containernetworking-plugins buildah mmdebstrap iptables iproute2)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
echo "debian-packages: installing ${missing[*]}" >&2
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q >&2
"${sudo[@]}" apt-get install -y -q "${missing[@]}" >&2
