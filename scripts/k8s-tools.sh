#!/usr/bin/env bash
# Builds the Go binaries the Kubernetes tests run — kube-apiserver, kubectl, etcd and helm — from the
# Go module proxy, once per version, into a cache outside the repository:
#   ${PHANTOMGATE_CACHE:-$HOME/.cache/phantomgate}/bin/<tool>-<version>
#
#   scripts/k8s-tools.sh ensure      build whatever is missing (idempotent; safe to run concurrently)
#   scripts/k8s-tools.sh print-env   print KEY=path lines (KUBE_APISERVER, KUBECTL, ETCD, HELM, versions)
#   scripts/k8s-tools.sh go          print the Go toolchain the builds use (fetching it first if needed)
#   scripts/k8s-tools.sh tidy        maintainers: rewrite test/k8s/{tools,etcd}/go.mod from the versions
#                                    below and refresh go.sum (run after changing a version)
#
# Why Go builds: no Docker, no dl.k8s.io here; the module proxy is reachable. See
# ../shared/KUBERNETES-NOTES.md for the wrapper-module trick. kubectl is built too because Debian's
# kubernetes-client is 1.20 (no `kubectl create token`) and kubectl supports only ±1 minor of skew.
#
# Go: K8S_TOOLS_GO, else go on PATH or /usr/local/go/bin/go when >= 1.26, else Go fetched from the module proxy
# into the cache (scripts/fetch-go.ts).
# Knobs: PHANTOMGATE_CACHE (cache root), K8S_TOOLS_GO (go binary, or `fetch` for the pinned one from the module
# proxy), K8S_TOOLS_JOBS (go build -p, default 2).
set -euo pipefail

# ---- the one place where versions are pinned -------------------------------------------------------
KUBE_VERSION=v1.35.4 # k8s.io/kubernetes; staging modules at v0.35.4 (newest 1.34/1.35 on the proxy)
ETCD_VERSION=v3.6.16 # go.etcd.io/etcd/server/v3 (newest 3.6.x on the proxy)
HELM_VERSION=v3.19.5 # helm.sh/helm/v3 (newest 3.19.x on the proxy)
# -----------------------------------------------------------------------------------------------------

# Staging modules of k8s.io/kubernetes 1.34/1.35 (1.36 adds streaming and cri-streaming).
KUBE_STAGING=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
  cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api cri-client
  csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms kube-aggregator
  kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics mount-utils
  pod-security-admission sample-apiserver sample-cli-plugin sample-controller)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS_MOD=$ROOT/test/k8s/tools
ETCD_MOD=$ROOT/test/k8s/etcd
CACHE=${PHANTOMGATE_CACHE:-$HOME/.cache/phantomgate}
BIN=$CACHE/bin
KUBE_MAJOR=${KUBE_VERSION#v}
KUBE_MAJOR=${KUBE_MAJOR%%.*}
KUBE_MINOR=${KUBE_VERSION#v*.}
KUBE_MINOR=${KUBE_MINOR%%.*}
KUBE_STAGING_VERSION=v0.${KUBE_VERSION#v*.}

KUBE_APISERVER_BIN=$BIN/kube-apiserver-$KUBE_VERSION
KUBECTL_BIN=$BIN/kubectl-$KUBE_VERSION
ETCD_BIN=$BIN/etcd-$ETCD_VERSION
HELM_BIN=$BIN/helm-$HELM_VERSION

log() { printf 'k8s-tools: %s\n' "$*" >&2; }
die() {
  printf 'k8s-tools: error: %s\n' "$*" >&2
  exit 1
}

usage() { # exit-code
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit "$1"
}

# Whether $1 is a Go toolchain of at least 1.26 (etcd 3.6.16's go.mod says go 1.26.0; with GOTOOLCHAIN=local an
# older Go cannot build it).
go_is_recent() {
  local v
  v=$(GOTOOLCHAIN=local "$1" env GOVERSION 2>/dev/null) || return 1
  [[ $v =~ ^go1\.([0-9]+) ]] && ((BASH_REMATCH[1] >= 26))
}

# Sets GO: $K8S_TOOLS_GO when given (it must do), else go on PATH or /usr/local/go/bin/go when recent enough,
# else a toolchain fetched from the Go module proxy into the cache (scripts/fetch-go.ts, checksum pinned there).
find_go() {
  local go=${K8S_TOOLS_GO:-} candidate
  if [[ $go == fetch ]]; then
    fetch_go
    return
  fi
  if [[ -n $go ]]; then
    [[ -x $go ]] || die "K8S_TOOLS_GO=$go is not an executable"
    go_is_recent "$go" || die "K8S_TOOLS_GO=$go is not Go >= 1.26 (etcd $ETCD_VERSION requires it)"
    GO=$go
    return
  fi
  for candidate in "$(command -v go || true)" /usr/local/go/bin/go; do
    if [[ -n $candidate && -x $candidate ]] && go_is_recent "$candidate"; then
      GO=$candidate
      return
    fi
  done
  log "no Go >= 1.26 (looked for go on PATH and /usr/local/go/bin/go); fetching one from the Go module proxy"
  fetch_go
}

# Sets GO to the toolchain pinned in scripts/fetch-go.ts, downloaded into the cache on first use.
fetch_go() {
  local go
  command -v node >/dev/null || die "no node to fetch Go with; install Go >= 1.26 or set K8S_TOOLS_GO"
  go=$(node "$ROOT/scripts/fetch-go.ts" "$CACHE/go-toolchain") ||
    die "could not fetch a Go toolchain (error above); install Go >= 1.26 or set K8S_TOOLS_GO"
  go_is_recent "$go" || die "the fetched toolchain $go does not run as Go >= 1.26"
  GO=$go
}

# The Go environment for every build: module and build caches live in the phantomgate cache so that
# later builds (and other checkouts) reuse them; a local toolchain only; VCS stamping off (the wrapper
# modules sit inside this git repository, whose state has nothing to do with the binaries).
go_env() {
  export GOTOOLCHAIN=local
  export GOMODCACHE=$CACHE/go/mod
  export GOCACHE=$CACHE/go/build
  export GOFLAGS="-buildvcs=false -mod=readonly -p=${K8S_TOOLS_JOBS:-2}"
  export CGO_ENABLED=0
  export GOWORK=off
  unset GOOS GOARCH GOBIN
}

# Refuse to build when a wrapper go.mod disagrees with the versions pinned above.
check_modules() {
  grep -qE "^(require )?[[:space:]]*k8s\.io/kubernetes ${KUBE_VERSION//./\\.}( // indirect)?\$" "$TOOLS_MOD/go.mod" ||
    die "$TOOLS_MOD/go.mod does not require k8s.io/kubernetes $KUBE_VERSION; run: bash scripts/k8s-tools.sh tidy"
  local s
  for s in "${KUBE_STAGING[@]}"; do
    grep -qE "^[[:space:]]*k8s\.io/$s => k8s\.io/$s ${KUBE_STAGING_VERSION//./\\.}\$" "$TOOLS_MOD/go.mod" ||
      die "$TOOLS_MOD/go.mod lacks 'k8s.io/$s => k8s.io/$s $KUBE_STAGING_VERSION'; run: bash scripts/k8s-tools.sh tidy"
  done
  grep -qE "^(require )?[[:space:]]*go\.etcd\.io/etcd/server/v3 ${ETCD_VERSION//./\\.}( // indirect)?\$" "$ETCD_MOD/go.mod" ||
    die "$ETCD_MOD/go.mod does not require go.etcd.io/etcd/server/v3 $ETCD_VERSION; run: bash scripts/k8s-tools.sh tidy"
}

# Runs "$@" under nice, reports and records how long it took. $1 is the label.
timed() {
  local label=$1 start end
  shift
  start=$(date +%s)
  log "building $label (first build can take 10-30 min on 2 cores; log: $BUILD_LOG)"
  if ! nice -n 10 "$@" >>"$BUILD_LOG" 2>&1; then
    tail -n 30 "$BUILD_LOG" >&2
    die "building $label failed; full log: $BUILD_LOG"
  fi
  end=$(date +%s)
  log "built $label in $((end - start)) s"
  printf '%s\t%s\t%ss\t%s\n' "$(date -u +%FT%TZ)" "$label" "$((end - start))" "$($GO env GOVERSION)" >>"$BIN/build-times.tsv"
}

# Sets MODULE_TIME to the module's publication time (for a reproducible buildDate stamp).
module_time() { # dir module
  local format='{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}'
  if ! MODULE_TIME=$(cd "$1" && "$GO" list -m -f "$format" "$2" 2>/dev/null) || [[ -z $MODULE_TIME ]]; then
    MODULE_TIME=1970-01-01T00:00:00Z
  fi
}

# Like hack/lib/version.sh upstream: stamp both component-base and client-go. Never a wrong minor.
kube_ldflags() {
  local pkg flags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$KUBE_MAJOR -X $pkg.gitMinor=$KUBE_MINOR"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$MODULE_TIME"
  done
  printf '%s' "$flags"
}

build_kube() { # name
  local name=$1 out
  out=$BIN/$name-$KUBE_VERSION
  [[ -x $out ]] && return 0
  module_time "$TOOLS_MOD" k8s.io/kubernetes
  (
    cd "$TOOLS_MOD"
    timed "$name $KUBE_VERSION" "$GO" build -trimpath -tags selinux,notest -ldflags "$(kube_ldflags)" \
      -o "$out.tmp.$$" "k8s.io/kubernetes/cmd/$name"
  )
  mv -f "$out.tmp.$$" "$out"
}

build_etcd() {
  [[ -x $ETCD_BIN ]] && return 0
  (
    cd "$ETCD_MOD"
    # etcd's own release build: CGO off, -trimpath; its version is a constant in the source.
    timed "etcd $ETCD_VERSION" "$GO" build -trimpath -ldflags "-s -w" -o "$ETCD_BIN.tmp.$$" go.etcd.io/etcd/server/v3
  )
  mv -f "$ETCD_BIN.tmp.$$" "$ETCD_BIN"
}

build_helm() {
  [[ -x $HELM_BIN ]] && return 0
  local gobin=$BIN/.helm-build.$$ flags="-s -w" pkg
  flags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  # Without these `helm template`/`helm lint` assume Kubernetes 1.20; match the API server we run.
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    flags+=" -X $pkg.k8sVersionMajor=$KUBE_MAJOR -X $pkg.k8sVersionMinor=$KUBE_MINOR"
  done
  mkdir -p "$gobin"
  (
    cd "$CACHE" # outside any module: `go install pkg@version` builds helm with helm's own go.mod
    GOFLAGS=${GOFLAGS/-mod=readonly/} GOBIN=$gobin timed "helm $HELM_VERSION" \
      "$GO" install -trimpath -ldflags "$flags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  )
  mv -f "$gobin/helm" "$HELM_BIN"
  rmdir "$gobin"
}

# A freshly built binary must say the version it is named for.
verify() {
  local out
  out=$("$KUBE_APISERVER_BIN" --version 2>&1) || die "$KUBE_APISERVER_BIN --version failed: $out"
  [[ $out == "Kubernetes $KUBE_VERSION" ]] || die "$KUBE_APISERVER_BIN reports '$out', expected 'Kubernetes $KUBE_VERSION'"
  out=$("$KUBECTL_BIN" version --client 2>&1 | head -n 1) || true
  [[ $out == "Client Version: $KUBE_VERSION" ]] || die "$KUBECTL_BIN reports '$out', expected 'Client Version: $KUBE_VERSION'"
  out=$("$ETCD_BIN" --version 2>&1 | head -n 1) || true
  [[ $out == "etcd Version: ${ETCD_VERSION#v}" ]] || die "$ETCD_BIN reports '$out', expected 'etcd Version: ${ETCD_VERSION#v}'"
  out=$("$HELM_BIN" version --template '{{.Version}}' 2>&1) || true
  [[ $out == "$HELM_VERSION" ]] || die "$HELM_BIN reports '$out', expected '$HELM_VERSION'"
}

all_present() { [[ -x $KUBE_APISERVER_BIN && -x $KUBECTL_BIN && -x $ETCD_BIN && -x $HELM_BIN ]]; }

cmd_ensure() {
  all_present && return 0
  find_go
  check_modules
  mkdir -p "$BIN" "$CACHE/go"
  exec 9>"$CACHE/k8s-tools.lock"
  if ! flock -n 9; then
    log "another k8s-tools build holds $CACHE/k8s-tools.lock; waiting for it (up to 90 min)"
    flock -w 5400 9 || die "timed out waiting for $CACHE/k8s-tools.lock"
  fi
  if all_present; then # built by whoever held the lock
    return 0
  fi
  BUILD_LOG=$CACHE/build-$(date -u +%Y%m%dT%H%M%SZ)-$$.log
  go_env
  rm -f "$BIN"/*.tmp.* # leftovers of an interrupted build (we hold the lock)
  rm -rf "$BIN"/.helm-build.*
  build_kube kube-apiserver
  build_kube kubectl
  build_etcd
  build_helm
  verify
  log "all tools ready in $BIN"
}

cmd_print_env() {
  printf 'KUBE_APISERVER=%s\nKUBECTL=%s\nETCD=%s\nHELM=%s\n' "$KUBE_APISERVER_BIN" "$KUBECTL_BIN" "$ETCD_BIN" "$HELM_BIN"
  printf 'KUBE_VERSION=%s\nETCD_VERSION=%s\nHELM_VERSION=%s\n' "$KUBE_VERSION" "$ETCD_VERSION" "$HELM_VERSION"
}

cmd_tidy() {
  find_go
  go_env
  export GOFLAGS=-buildvcs=false
  local s
  {
    sed -n '1,/^module /p' "$TOOLS_MOD/go.mod"
    printf '\ngo 1.25.0\n\ntool (\n\tk8s.io/kubernetes/cmd/kube-apiserver\n\tk8s.io/kubernetes/cmd/kubectl\n)\n\n'
    printf 'require k8s.io/kubernetes %s\n\nreplace (\n' "$KUBE_VERSION"
    for s in "${KUBE_STAGING[@]}"; do
      printf '\tk8s.io/%s => k8s.io/%s %s\n' "$s" "$s" "$KUBE_STAGING_VERSION"
    done
    printf ')\n'
  } >"$TOOLS_MOD/go.mod.new"
  mv "$TOOLS_MOD/go.mod.new" "$TOOLS_MOD/go.mod"
  {
    sed -n '1,/^module /p' "$ETCD_MOD/go.mod"
    printf '\ngo 1.26.0\n\ntool go.etcd.io/etcd/server/v3\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION"
  } >"$ETCD_MOD/go.mod.new"
  mv "$ETCD_MOD/go.mod.new" "$ETCD_MOD/go.mod"
  (cd "$TOOLS_MOD" && "$GO" mod tidy)
  (cd "$ETCD_MOD" && "$GO" mod tidy)
  check_modules
  log "go.mod/go.sum refreshed; run '$0 ensure' to build"
}

case ${1:-ensure} in
  ensure) cmd_ensure ;;
  print-env) cmd_print_env ;;
  tidy) cmd_tidy ;;
  go)
    find_go
    printf '%s\n' "$GO"
    ;;
  -h | --help | help) usage 0 ;;
  *)
    printf 'k8s-tools: unknown command %q\n' "$1" >&2
    usage 2
    ;;
esac
