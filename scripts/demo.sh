#!/usr/bin/env bash
# `npm run demo`: the whole product on this machine. Installs dependencies and builds the addon when
# missing, builds the local cluster's binaries (cached), then runs scripts/demo.ts.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

if [ ! -d node_modules/tsx ] || [ ! -d node_modules/yaml ]; then
  step "installing dependencies (npm ci: builds the native addon and compiles TypeScript)"
  npm ci --no-audit --no-fund
fi
if [ ! -f native/build/npuserve.node ]; then
  step "building the native addon"
  npm run build:native
fi
if [ ! -f dist/runtime/cli.js ]; then
  step "compiling TypeScript"
  npx tsc -p tsconfig.json
fi
step "local cluster binaries (etcd, kube-apiserver, kubectl, helm, ...; cached in ~/.cache/npuserve)"
bash test/cluster/build
exec npx tsx scripts/demo.ts "$@"
