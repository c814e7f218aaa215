#!/usr/bin/env bash
# Starts/stops a local etcd + kube-apiserver for development (same code as the Kubernetes tests:
# test/k8s/harness/cluster.ts). `up` writes .dev/kubeconfig; `down` stops the servers.
#   scripts/dev-cluster.sh up|down|status
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# Node.js 24 from the `node` devDependency, as everywhere else in this repo.
export PATH=$ROOT/node_modules/.bin:$PATH
if ! command -v node >/dev/null || [[ $(node --version) != v24.* ]]; then
  echo "dev-cluster: needs Node.js 24 from node_modules (run: make deps)" >&2
  exit 1
fi

case ${1:-} in
  up)
    bash scripts/k8s-tools.sh ensure
    exec node test/k8s/harness/dev-cluster-main.ts up
    ;;
  down | status)
    exec node test/k8s/harness/dev-cluster-main.ts "$1"
    ;;
  *)
    echo "usage: scripts/dev-cluster.sh up|down|status" >&2
    exit 2
    ;;
esac
