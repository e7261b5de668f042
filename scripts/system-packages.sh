#!/usr/bin/env bash
# Debian packages that real nodes and the image need: containerd, runc and the CNI plugins run the
# nodes' pods, iptables and conntrack serve kube-proxy, podman, buildah and debootstrap build the
# image. Installed when missing (as root, with apt-get); elsewhere this says what is missing, and the
# cluster tests fall back to the node agent.
set -euo pipefail
packages=(podman buildah containerd runc containernetworking-plugins iptables conntrack debootstrap)
need=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
[[ ${#need[@]} -eq 0 ]] && exit 0
if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "[system packages] installing ${need[*]} (apt-get)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "[system packages] missing ${need[*]}: install them (Debian: apt-get install ${need[*]}) for real nodes and the image" >&2
fi
