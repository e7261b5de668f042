# The npuserve image: one image for the operator, conversion Jobs and serving pods (`npuserve` is
# the entrypoint, so pods pass `args: [operator|convert|serve, ...]`). Its layout under /opt/npuserve
# is the checkout the local cluster's node agent runs: bin/npuserve.js, dist/, native/build/npuserve.node
# and the production node_modules.
#   docker build -t npuserve:0.1.0 .

# ---- build: the addon (CMake, Node-API headers from npm, no downloads) and the TypeScript ----
FROM node:20-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
# Dependencies first, scripts off: the layer is reused until the lockfile changes.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY native ./native
COPY common ./common
COPY cli ./cli
COPY runtime ./runtime
COPY operator ./operator
COPY bin ./bin
# `npm run build` = node native/build.mjs (cmake, using node-addon-api + node-api-headers) && tsc.
RUN npm run build \
 && test -f native/build/npuserve.node \
 && npm prune --omit=dev --no-audit --no-fund

# ---- runtime: Node 20 slim, the built files only, non-root ----
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    HOME=/tmp
WORKDIR /opt/npuserve
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/bin ./bin
COPY --from=build /src/dist ./dist
COPY --from=build /src/native/build/npuserve.node ./native/build/npuserve.node
RUN ln -s /opt/npuserve/bin/npuserve.js /usr/local/bin/npuserve \
 && chmod 0755 /opt/npuserve/bin/npuserve.js \
 && groupadd --gid 10001 npuserve \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin npuserve \
 && chmod 1777 /tmp
# Numeric, so runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# /tmp is the only path written at run time; the chart mounts an emptyDir there for read-only root filesystems.
VOLUME ["/tmp"]
EXPOSE 8000 8080
ENTRYPOINT ["npuserve"]
CMD ["--help"]
