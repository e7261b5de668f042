#!/usr/bin/env bash
# Debian packages that real nodes and the image need: containerd, runc and the CNI plugins run the
# nodes' pods, iptables and conntrack serve kube-proxy, podman, buildah and debootstrap build the
# image; prometheus (prometheus and promtool, without its recommended exporters) checks the chart's
# dashboard and alert rules. Installed when missing (as root, with apt-get); elsewhere this says what
# is missing, and the tests that need it cannot run.
set -euo pipefail
packages=(podman buildah containerd runc containernetworking-plugins iptables conntrack debootstrap)
bare_packages=(prometheus)
need=()
need_bare=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
for pkg in "${bare_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_bare+=("$pkg")
done
[[ ${#need[@]} -eq 0 && ${#need_bare[@]} -eq 0 ]] && exit 0
if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "[system packages] installing ${need[*]} ${need_bare[*]} (apt-get)" >&2
  apt-get update -qq
  [[ ${#need[@]} -eq 0 ]] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  [[ ${#need_bare[@]} -eq 0 ]] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_bare[@]}" >/dev/null
else
  echo "[system packages] missing ${need[*]} ${need_bare[*]}: install them (Debian: apt-get install ${need[*]}; apt-get install --no-install-recommends ${need_bare[*]}) for real nodes, the image and the Prometheus tests" >&2
fi
