# regmirror container image.
#
#   docker build -t regmirror .            (or: podman build / buildah bud)
#   docker run -d -p 5000:5000 -v regmirror-data:/data regmirror
#
# BASE is any glibc image with Node.js 20 (node and npm) on PATH. The dependency stage
# compiles better-sqlite3, so it needs python3, make and g++; they are installed there with
# apt-get when BASE lacks them, and never reach the runtime stage. RUNTIME_BASE (default:
# BASE) is what the final image starts from: it needs the same Node.js and a shell.
ARG BASE=node:20-bookworm-slim
ARG RUNTIME_BASE=${BASE}

# ---- deps: production node_modules, native modules compiled here
FROM ${BASE} AS deps
RUN if ! command -v python3 >/dev/null || ! command -v make >/dev/null || ! command -v g++ >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 make g++ \
      && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /app
COPY package.json package-lock.json ./
# node-gyp uses the headers that come with node when the base has them (the official
# images do), instead of downloading them: the build then needs only the npm registry.
RUN nodedir="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")" \
    && if [ -f "$nodedir/include/node/node_api.h" ]; then export npm_config_nodedir="$nodedir"; fi \
    && npm ci --omit=dev --no-audit --no-fund \
    && cd node_modules/better-sqlite3 \
    && rm -rf deps src build/deps build/Release/obj build/Release/obj.target build/Release/.deps \
       build/Release/sqlite3.a build/Release/test_extension.node

# ---- build: src/ bundled into dist/ by esbuild (dev dependencies; esbuild's binary comes in
# its platform package, so no install scripts run)
FROM ${BASE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY scripts/build.ts ./scripts/
COPY src ./src
RUN npm run build

# ---- runtime: node, dist/ and production node_modules; no compilers, no npm cache
FROM ${RUNTIME_BASE}
ENV NODE_ENV=production
# Large buffers as their own mappings, returned to the system when freed (see the node-local DaemonSet).
ENV MALLOC_MMAP_THRESHOLD_=65536
WORKDIR /app
# A fixed numeric user, so Kubernetes can check runAsNonRoot against the image.
RUN echo 'regmirror:x:10001:10001:regmirror:/data:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'regmirror:x:10001:' >> /etc/group \
    && mkdir -p /data /etc/regmirror /usr/local/bin \
    && chown 10001:10001 /data \
    && ln -s /app/bin/regmirror.js /usr/local/bin/regmirror
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY deploy/container/mirror.yaml /etc/regmirror/mirror.yaml
USER 10001:10001
VOLUME /data
EXPOSE 5000
# Docker-format images only (docker build; buildah/podman with --format docker). It asks
# port 5000: a config that listens elsewhere needs --health-cmd (or no healthcheck).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:5000/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["regmirror"]
CMD ["serve", "--config", "/etc/regmirror/mirror.yaml"]
