# The npuserve image: one image for the operator, conversion Jobs and serving pods (`npuserve` is
# the entrypoint, so pods pass `args: [operator|convert|serve, ...]`). Built by `npm run image:build`
# (scripts/image-build.sh), which picks the base: NODE_BASE is a Debian bookworm image with Node.js
# 20 and npm (docker.io/library/node:20-bookworm-slim where a registry is reachable, a base built
# from Debian and npm packages where none is).
#   podman build --build-arg NODE_BASE=docker.io/library/node:20-bookworm-slim -t npuserve:0.1.0 .
ARG NODE_BASE=docker.io/library/node:20-bookworm-slim

# ---- build: the addon (CMake, Node-API headers from npm, no downloads) and the TypeScript ----
FROM ${NODE_BASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
# Dependencies first, scripts off: the layer is reused until the lockfile changes. A registry behind
# a TLS-intercepting proxy needs its CA: pass it as the build secret npm-ca (never stored in a layer).
RUN --mount=type=secret,id=npm-ca \
    if [ -s /run/secrets/npm-ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/npm-ca; fi \
 && npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY native ./native
COPY common ./common
COPY cli ./cli
COPY runtime ./runtime
COPY operator ./operator
COPY gateway ./gateway
COPY bin ./bin
# `npm run build` = node native/build.mjs (cmake, using node-addon-api + node-api-headers) && tsc.
RUN npm run build \
 && test -f native/build/npuserve.node \
 && npm prune --omit=dev --no-audit --no-fund

# ---- runtime: the same base without compilers, the built files only, non-root ----
FROM ${NODE_BASE}
ENV NODE_ENV=production \
    HOME=/tmp
WORKDIR /opt/npuserve
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/bin ./bin
COPY --from=build /src/dist ./dist
COPY --from=build /src/native/build/npuserve.node ./native/build/npuserve.node
# The user is written into /etc/passwd directly: a minimal Debian base has no useradd.
RUN ln -s /opt/npuserve/bin/npuserve.js /usr/local/bin/npuserve \
 && chmod 0755 /opt/npuserve/bin/npuserve.js \
 && echo 'npuserve:x:10001:10001:npuserve:/tmp:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'npuserve:x:10001:' >> /etc/group \
 && chmod 1777 /tmp
# Numeric, so runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# /tmp is the only path written at run time; the chart mounts an emptyDir there for read-only root filesystems.
VOLUME ["/tmp"]
EXPOSE 8000 8080
ENTRYPOINT ["npuserve"]
CMD ["--help"]
