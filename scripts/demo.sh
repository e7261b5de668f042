#!/usr/bin/env bash
# `npm run demo`: the whole product on this machine. Installs dependencies and builds the addon when
# missing, builds the local cluster's binaries (cached), then runs scripts/demo.ts.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# with_elapsed WHAT COMMAND...: runs COMMAND, printing how long it has been running every 15 s, so a
# quiet step (npm ci, tsc) is never silent for minutes.
with_elapsed() {
  local what="$1" start=$SECONDS last=$SECONDS pid
  shift
  "$@" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.5
    if (( SECONDS - last >= 15 )) && kill -0 "$pid" 2>/dev/null; then
      last=$SECONDS
      echo "  ... still $what ($((SECONDS - start)) s)"
    fi
  done
  wait "$pid"
  echo "  $what: done in $((SECONDS - start)) s"
}

if [ ! -d node_modules/tsx ] || [ ! -d node_modules/yaml ]; then
  step "installing dependencies (npm ci: builds the native addon and compiles TypeScript)"
  with_elapsed "installing dependencies" npm ci --no-audit --no-fund
fi
if [ ! -f native/build/npuserve.node ]; then
  step "building the native addon"
  with_elapsed "building the native addon" npm run build:native
fi
if [ ! -f dist/cli/main.js ]; then
  step "compiling TypeScript"
  with_elapsed "compiling TypeScript" npx tsc -p tsconfig.json
fi
step "Debian packages for the real node and the image (containerd, runc, CNI plugins, podman; installed when missing)"
bash scripts/system-packages.sh
step "local cluster binaries (etcd, kube-apiserver, kubectl, helm, ...; cached in ~/.cache/npuserve)"
bash test/cluster/build
exec npx tsx scripts/demo.ts "$@"
