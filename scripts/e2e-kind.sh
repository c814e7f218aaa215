#!/usr/bin/env bash
# End-to-end test on a kind cluster, the way users install phantomgate. NEEDS DOCKER (a running engine) and
# kind, kubectl, helm and curl on PATH (or KIND, KUBECTL, HELM pointing at them); `make e2e-kind` runs it.
#
#   1. build the image (Dockerfile) and create a kind cluster (test/e2e/kind-config.yaml), load the image
#   2. helm install charts/phantomgate (test/e2e/values-kind.yaml), wait for the operator and the gateways
#   3. deploy the demo authorization server and APIs in the cluster (test/e2e/demo.yaml)
#   4. apply routes (test/e2e/routes.yaml); wait for Accepted/Programmed; the webhook rejects a bad route
#   5. get tokens from the demo AS and call the APIs through the gateway Service (NodePort on 127.0.0.1)
#   6. change a route and see the change served; delete every operator Pod and see traffic continue; the
#      fleet reconnects and serves the next change
#   7. the gateway ServiceAccount can read neither Secrets nor the custom resources
#   8. helm uninstall keeps the CRDs; the cluster is deleted (KEEP_CLUSTER=1 keeps it)
#
# Knobs: CLUSTER_NAME (phantomgate-e2e), IMAGE (phantomgate:e2e), KIND_NODE_IMAGE (kind's default),
# KEEP_CLUSTER=1, SKIP_BUILD=1 (use an existing $IMAGE), NAMESPACE (phantomgate).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2E=$ROOT/test/e2e
CLUSTER_NAME=${CLUSTER_NAME:-phantomgate-e2e}
IMAGE=${IMAGE:-phantomgate:e2e}
NAMESPACE=${NAMESPACE:-phantomgate}
DEMO_NS=phantomgate-demo
RELEASE=phantomgate
GATEWAY_URL=http://127.0.0.1:18080 # NodePort 30080 (test/e2e/kind-config.yaml)
AS_URL=http://127.0.0.1:19000      # NodePort 30900
KIND=${KIND:-kind}
KUBECTL=${KUBECTL:-kubectl}
HELM=${HELM:-helm}

log() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
fail() {
  printf '\n\033[31mFAIL: %s\033[0m\n' "$*" >&2
  exit 1
}

need() {
  command -v "$1" > /dev/null 2>&1 || fail "$1 not found on PATH. $2"
}
need docker "This test needs Docker (a running engine): it builds an image and runs kind."
docker info > /dev/null 2>&1 || fail "docker cannot reach a Docker engine (docker info failed). This test needs Docker."
need "$KIND" "Install kind (go install sigs.k8s.io/kind@v0.33.0, or a release binary) or set KIND."
need "$KUBECTL" "Install kubectl or set KUBECTL."
need "$HELM" "Install helm v3 or set HELM."
need curl "Install curl."

KUBECONFIG_FILE=$(mktemp -t phantomgate-e2e-kubeconfig.XXXXXX)
export KUBECONFIG=$KUBECONFIG_FILE
k() { "$KUBECTL" "$@"; }

cleanup() {
  local status=$?
  if ((status != 0)); then
    printf '\n==> diagnostics (exit %s)\n' "$status" >&2
    k get pods,svc,endpointslices -A -o wide >&2 || true
    k -n "$NAMESPACE" describe pods >&2 || true
    k get apiroutes,scopepolicies,authservers -A -o yaml >&2 || true
    k get events -A --sort-by=.lastTimestamp >&2 | tail -50 || true
    for deploy in "$RELEASE-operator" "$RELEASE-gateway"; do
      k -n "$NAMESPACE" logs "deployment/$deploy" --all-containers --tail=200 --prefix >&2 || true
    done
    k -n "$DEMO_NS" logs deployment/demo-as --all-containers --tail=100 >&2 || true
  fi
  if [[ ${KEEP_CLUSTER:-} == 1 ]]; then
    echo "KEEP_CLUSTER=1: cluster $CLUSTER_NAME kept; kubeconfig: $KUBECONFIG_FILE" >&2
  else
    "$KIND" delete cluster --name "$CLUSTER_NAME" > /dev/null 2>&1 || true
    rm -f "$KUBECONFIG_FILE"
  fi
  exit "$status"
}
trap cleanup EXIT

# --- helpers -----------------------------------------------------------------------------------------------

# The demo AS issues opaque tokens by client_credentials; prints the access token.
token() { # scope
  local body
  body=$(curl -fsS -u demo-client:demo-secret -d grant_type=client_credentials -d "scope=$1" "$AS_URL/token") ||
    fail "no token from the demo AS for scope $1"
  sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' <<< "$body"
}

# Prints the HTTP status of GET $GATEWAY_URL$path with the token, if any (000 when the connection failed).
status_of() { # path [token]
  local auth=()
  [[ -n ${2:-} ]] && auth=(-H "Authorization: Bearer $2")
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 ${auth[@]+"${auth[@]}"} "$GATEWAY_URL$1" || true
}

# Polls until GET path answers the wanted status; fails after the timeout with the last status.
wait_status() { # path token want timeout-seconds
  local deadline=$((SECONDS + $4)) got
  while :; do
    got=$(status_of "$1" "$2")
    [[ $got == "$3" ]] && return 0
    ((SECONDS < deadline)) || fail "GET $1 answered $got, wanted $3 within $4 s"
    sleep 0.5
  done
}

# --- 1. image and cluster ----------------------------------------------------------------------------------

if [[ ${SKIP_BUILD:-} != 1 ]]; then
  log "docker build -t $IMAGE"
  docker build -t "$IMAGE" --build-arg "REVISION=$(git -C "$ROOT" rev-parse HEAD 2> /dev/null || echo unknown)" "$ROOT"
fi
log "image runs: $IMAGE --help"
docker run --rm --read-only --user 1000:1000 "$IMAGE" --help > /dev/null

log "kind create cluster $CLUSTER_NAME"
"$KIND" delete cluster --name "$CLUSTER_NAME" > /dev/null 2>&1 || true
node_image=()
[[ -n ${KIND_NODE_IMAGE:-} ]] && node_image=(--image "$KIND_NODE_IMAGE")
"$KIND" create cluster --name "$CLUSTER_NAME" --config "$E2E/kind-config.yaml" --kubeconfig "$KUBECONFIG_FILE" \
  --wait 180s ${node_image[@]+"${node_image[@]}"}
"$KIND" load docker-image "$IMAGE" --name "$CLUSTER_NAME"

# --- 2. helm install ---------------------------------------------------------------------------------------

log "helm install $RELEASE"
k create namespace "$NAMESPACE"
k label namespace "$NAMESPACE" pod-security.kubernetes.io/enforce=restricted
"$HELM" install "$RELEASE" "$ROOT/charts/phantomgate" -n "$NAMESPACE" -f "$E2E/values-kind.yaml" \
  --set "image.repository=${IMAGE%:*}" --set "image.tag=${IMAGE##*:}" --wait --timeout 5m
k -n "$NAMESPACE" rollout status "deployment/$RELEASE-operator" --timeout=180s
k -n "$NAMESPACE" rollout status "deployment/$RELEASE-gateway" --timeout=180s
for crd in apiroutes scopepolicies authservers; do k get crd "$crd.phantomgate.dev" > /dev/null; done
# The operator patched the webhook's caBundle (managed certificate).
ca_bundle=$(k get validatingwebhookconfiguration "$RELEASE-$NAMESPACE" -o jsonpath='{.webhooks[0].clientConfig.caBundle}')
[[ -n $ca_bundle ]] || fail "the operator did not set the webhook's caBundle"

# --- 3. demo AS and APIs -----------------------------------------------------------------------------------

log "deploy the demo authorization server and APIs"
sed "s|__IMAGE__|$IMAGE|g" "$E2E/demo.yaml" | k apply -f -
k -n "$DEMO_NS" rollout status deployment/demo-as --timeout=180s
k -n "$DEMO_NS" rollout status deployment/demo-apis --timeout=180s

# --- 4. routes ---------------------------------------------------------------------------------------------

log "apply routes"
k apply -f "$E2E/routes.yaml"
for route in echo invoices; do
  k -n "$DEMO_NS" wait --for=condition=Accepted "apiroute/$route" --timeout=60s
  k -n "$DEMO_NS" wait --for=condition=Programmed "apiroute/$route" --timeout=60s
done
k get apiroutes -A

log "the webhook rejects a route requiring an unknown scope"
if rejection=$(k apply -f "$E2E/bad-route.yaml" 2>&1); then
  fail "kubectl apply accepted a route with an unknown scope"
fi
grep -q "read_invoices" <<< "$rejection" || fail "the rejection does not name the unknown scope: $rejection"
echo "rejected: $rejection"

# --- 5. tokens and calls through the gateway Service ----------------------------------------------------------

log "call the APIs through the gateway"
READ=$(token read_invoice)
WRITE=$(token write_invoice)
[[ -n $READ && -n $WRITE ]] || fail "empty token"
wait_status /echo/hello "$READ" 200 60
echo_body=$(curl -fsS -H "Authorization: Bearer $READ" "$GATEWAY_URL/echo/hello")
# The echo API received a JWT from the gateway, never the client's opaque token.
grep -q "$READ" <<< "$echo_body" && fail "the opaque token reached the upstream"
grep -Eq '"authorization": *"Bearer ey' <<< "$echo_body" || fail "the upstream did not receive a JWT: $echo_body"
[[ $(status_of /invoices "$READ") == 200 ]] || fail "GET /invoices with read_invoice was not 200"
[[ $(status_of /echo/hello) == 401 ]] || fail "no token was not 401"
[[ $(status_of /echo/hello "not-a-token") == 401 ]] || fail "a bad token was not 401"

# --- 6. live changes, operator loss ----------------------------------------------------------------------------

log "change a route: /echo now requires write_invoice"
k -n "$DEMO_NS" patch apiroute echo --type=json \
  -p '[{"op":"replace","path":"/spec/rules/0/requiredScopes/allOf","value":["write_invoice"]}]'
wait_status /echo/hello "$READ" 403 10
wait_status /echo/hello "$WRITE" 200 10

log "delete every operator Pod: the gateways keep serving"
k -n "$NAMESPACE" delete pod -l app.kubernetes.io/component=operator,app.kubernetes.io/instance="$RELEASE" --wait=false
for _ in $(seq 1 40); do
  got=$(status_of /echo/hello "$WRITE")
  [[ $got == 200 ]] || fail "a request failed with $got while the operator was gone"
  sleep 0.5
done
k -n "$NAMESPACE" rollout status "deployment/$RELEASE-operator" --timeout=180s

log "the fleet reconnects to the new operator Pods and serves the next change"
k -n "$DEMO_NS" patch apiroute echo --type=json \
  -p '[{"op":"replace","path":"/spec/rules/0/requiredScopes/allOf","value":["read_invoice"]}]'
wait_status /echo/hello "$READ" 200 30
k -n "$DEMO_NS" wait --for=condition=Programmed apiroute/echo --timeout=60s

# --- 7. the gateways' identity ---------------------------------------------------------------------------------

log "the gateway ServiceAccount can read neither Secrets nor the custom resources"
gateway_sa=system:serviceaccount:$NAMESPACE:$RELEASE-gateway
for what in secrets apiroutes.phantomgate.dev scopepolicies.phantomgate.dev authservers.phantomgate.dev; do
  if k auth can-i get "$what" --all-namespaces --as "$gateway_sa" > /dev/null 2>&1; then
    fail "$gateway_sa can get $what"
  fi
done

# --- 8. uninstall ----------------------------------------------------------------------------------------------

log "helm uninstall keeps the CRDs"
"$HELM" uninstall "$RELEASE" -n "$NAMESPACE" --wait --timeout 2m
for crd in apiroutes scopepolicies authservers; do k get crd "$crd.phantomgate.dev" > /dev/null; done
k -n "$DEMO_NS" get apiroute echo > /dev/null

log "e2e on kind passed"
