#!/usr/bin/env bash
# Copies the generated CRDs (crds/*.yaml, written by `make crds`) into the Helm chart's crds/ directory, which
# must hold exactly the same files (test/unit/chart-crds.test.ts checks it).
#
#   scripts/sync-chart-crds.sh          copy, and remove chart CRDs that no longer exist at the top level
#   scripts/sync-chart-crds.sh --check  change nothing; exit 1 and name the files when they differ
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC=$ROOT/crds
DST=$ROOT/charts/phantomgate/crds
check=false
case ${1:-} in
  --check) check=true ;;
  "") ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

shopt -s nullglob
sources=("$SRC"/*.yaml)
((${#sources[@]} > 0)) || {
  echo "sync-chart-crds: no CRDs in $SRC (run make crds)" >&2
  exit 1
}

stale=()
for src in "${sources[@]}"; do
  name=$(basename "$src")
  if ! cmp -s "$src" "$DST/$name"; then
    stale+=("$name")
    $check || { mkdir -p "$DST" && cp "$src" "$DST/$name"; }
  fi
done
for dst in "$DST"/*.yaml; do
  name=$(basename "$dst")
  if [[ ! -e $SRC/$name ]]; then
    stale+=("$name (not in crds/)")
    $check || rm -f "$dst"
  fi
done

if ((${#stale[@]} == 0)); then
  echo "charts/phantomgate/crds is up to date"
elif $check; then
  echo "charts/phantomgate/crds differs from crds/: ${stale[*]}; run make chart-crds" >&2
  exit 1
else
  echo "synced charts/phantomgate/crds: ${stale[*]}"
fi
