# Two commands for a fresh machine: `make demo` and `make test`. Each installs what it needs first.
# npm scripts run on the Node.js 24 binary from the `node` devDependency (node_modules/.bin comes first).

SHELL := /bin/bash
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

DEPS_STAMP := node_modules/.deps-stamp

.PHONY: demo test deps lint typecheck bench clean

$(DEPS_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	@node --version | grep -q '^v24\.' || { echo "phantomgate needs Node.js 24; node_modules/.bin/node is $$(node --version)"; exit 1; }
	@touch $@

deps: $(DEPS_STAMP)

demo: deps
	node bin/phantomgate.js demo

test: deps
	npm test

lint: deps
	npm run lint

typecheck: deps
	npm run typecheck

bench: deps
	npm run bench

clean:
	rm -rf dist coverage .dev

# Kubernetes test tools (etcd, kube-apiserver, kubectl, helm) built from the Go module proxy into
# ${PHANTOMGATE_CACHE:-~/.cache/phantomgate}/bin; a local API server for development.
.PHONY: k8s-tools dev-cluster dev-cluster-down

k8s-tools:
	bash scripts/k8s-tools.sh ensure

dev-cluster: deps k8s-tools
	bash scripts/dev-cluster.sh up

dev-cluster-down:
	bash scripts/dev-cluster.sh down

# The CRDs in crds/, generated from the zod schemas, and their copy in the chart (tests fail when either drifts).
.PHONY: crds
crds: deps
	node scripts/generate-crds.ts
	bash scripts/sync-chart-crds.sh

# Helm chart and container image (charts/phantomgate, Dockerfile; docs/install.md).
#   chart-crds      copy the generated CRDs (crds/, `make crds`) into the chart's crds/
#   chart-lint      helm lint --strict of the chart with the default and the full test values
#   e2e-kind        NEEDS DOCKER: build the image, kind cluster, helm install, demo, live changes
#                   (scripts/e2e-kind.sh; kind, kubectl and helm on PATH)
.PHONY: chart-crds chart-lint e2e-kind

chart-crds:
	bash scripts/sync-chart-crds.sh

chart-lint: k8s-tools
	@helm=$$(bash scripts/k8s-tools.sh print-env | sed -n 's/^HELM=//p'); \
	"$$helm" lint --strict charts/phantomgate && \
	"$$helm" lint --strict charts/phantomgate -f test/golden/helm/full.values.yaml

e2e-kind:
	bash scripts/e2e-kind.sh
