# syntax=docker/dockerfile:1
# One image for both programs: `phantomgate gateway` (data plane) and `phantomgate operator` (control plane),
# plus the demo authorization server and APIs that the kind e2e runs. Node.js 24 runs the TypeScript sources
# directly (type stripping), so there is no compile step: the image holds bin/, src/, examples/, package.json,
# the production dependencies and Node's compile cache for them, nothing else.
#
#   docker build -t phantomgate:dev .
#   docker run --rm phantomgate:dev --help
#   docker run --rm phantomgate:dev gateway --help
#
# Stage `deps` installs production dependencies; stage `app` assembles /app and proves it loads; the final
# stage is node:24-bookworm-slim without npm, npx, corepack or yarn, plus the openssl CLI (the operator issues
# its webhook certificate with it: node:crypto reads X.509 but cannot create it — which is also why the base
# is not distroless). It runs as the numeric non-root user 1000 with every file owned by root, so a read-only
# root filesystem works: the gateway's state dir and /tmp are volumes in the chart.

ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
ENV NODE_ENV=production \
    npm_config_update_notifier=false \
    npm_config_fund=false \
    npm_config_audit=false
COPY package.json package-lock.json ./
# --ignore-scripts: no production dependency needs an install script, so none gets to run one.
RUN npm ci --omit=dev --ignore-scripts \
    && npm cache clean --force

FROM ${NODE_IMAGE} AS app
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY src ./src
COPY examples ./examples
# Fails the build when the sources do not load under this Node.js (e.g. syntax type stripping cannot erase).
RUN node bin/phantomgate.js --help > /dev/null
# Node's compile cache, filled with every module (bytecode and type-stripped source): pods start faster and never
# load the TypeScript stripper, ~20 MiB less RSS each. Same Node.js image as the final stage, so it stays valid.
ENV NODE_COMPILE_CACHE=/app/.cache/node-compile
RUN node bin/phantomgate.js compile-cache

FROM ${NODE_IMAGE}
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="phantomgate" \
      org.opencontainers.image.description="Kubernetes-operated API gateway for the phantom token pattern" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# openssl: the operator's certificate manager. Versions are not pinned: Debian replaces a package version in
# the archive with each security update, so a pin would break rebuilds; the base image tag is the pin.
# Then the package managers and build helpers go: the runtime needs node and nothing that installs code.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssl \
    && rm -rf /var/lib/apt/lists/* \
    && rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack /opt/yarn-* \
              /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack /usr/local/bin/yarn \
              /usr/local/bin/yarnpkg /usr/local/include/node
ENV NODE_ENV=production \
    NODE_COMPILE_CACHE=/app/.cache/node-compile
WORKDIR /app
# Owned by root and not writable by the runtime user: the app cannot modify itself.
COPY --from=app --chown=0:0 /app /app
# 1000 is the image's `node` user; numeric so that Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
# Gateway public port and admin port; operator snapshot stream, webhook, metrics/health.
EXPOSE 8080 9901 8081 9443 9090
ENTRYPOINT ["/usr/local/bin/node", "/app/bin/phantomgate.js"]
CMD ["--help"]
