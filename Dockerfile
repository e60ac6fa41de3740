# syntax=docker/dockerfile:1
#
# One image for all three roles of productimport: the upload API, the operator and the
# loader that runs inside each import Job. docker/entrypoint.sh picks the role:
#
#   docker run IMAGE api                     # productimport-api (the default)
#   docker run IMAGE operator                # productimport-operator
#   docker run IMAGE loader import SRC ...   # productimport (the loader contract)
#
# The Helm chart does not rely on the entrypoint: each Deployment names its console
# script as `command` (productimport-api, productimport-operator) and the operator gives
# the loader Job `productimport` (PRODUCTIMPORT_OPERATOR_LOADER_COMMAND).
#
# Built here without a registry by devenv/images.py (`make image`): buildah, with
# PYTHON_IMAGE set to a Debian base made by mmdebstrap; the dev cluster's node runs it.
#
# Lint: hadolint (tests/chart/test_dockerfile.py runs it and fails on any finding).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: a virtualenv with the pinned dependencies and the project -----------------
FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The same two install steps as scripts/setup.sh runs for .venv (tests/chart/
# test_dockerfile.py keeps them identical): every dependency exactly as pinned in
# requirements.lock, then the project itself without resolving anything again. The lock
# comes first so a code change does not reinstall the dependencies (layer cache).
# requirements.lock holds the runtime dependencies only; the development tools are in
# requirements-dev.lock, which never reaches the image.
COPY requirements.lock ./
RUN pip install --disable-pip-version-check --no-cache-dir -r requirements.lock
# productimport/api and productimport/operator are symlinks to the top-level api/ and
# operator/ (see pyproject.toml): copy the targets too; pip builds a regular wheel.
COPY pyproject.toml README.md ./
COPY productimport/ productimport/
COPY api/ api/
COPY operator/ operator/
# Then trim the virtualenv, which the runtime stage copies whole, to what the roles run:
# pip and setuptools only built it; kubernetes.aio, the client's asyncio twin (41 MB of
# source), is imported by neither the product nor kopf; and bytecode is kept only for
# the modules the three roles import when they start, written by importing them here
# (pip compiled every module: 89 MB, mostly client classes the roles never load). That
# import also fails the build if a role imports at start what was removed.
RUN pip install --disable-pip-version-check --no-cache-dir --no-deps . \
 && pip uninstall --disable-pip-version-check --yes pip setuptools \
 && rm -rf /opt/venv/lib/python3*/site-packages/kubernetes/aio \
 && find /opt/venv -name __pycache__ -prune -exec rm -rf {} + \
 && python -c 'import productimport.cli, productimport.api.main, productimport.operator.main'

# --- runtime: the interpreter and the virtualenv, nothing else --------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="productimport" \
      org.opencontainers.image.description="Kubernetes-native bulk product-catalog imports: upload API, Kopf operator and DuckDB loader in one image" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed, numeric, unprivileged user: Kubernetes can verify runAsNonRoot against it.
RUN groupadd --system --gid 10001 productimport \
 && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /tmp \
      --no-create-home --shell /usr/sbin/nologin productimport
COPY --from=builder /opt/venv /opt/venv
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/productimport-entrypoint
# HOME=/tmp: the chart runs every role with readOnlyRootFilesystem and an emptyDir at
# /tmp, so anything that writes under ~ (DuckDB's extension directory, say) finds a
# writable place. The API listens on every interface in a container (its default outside
# one is 127.0.0.1).
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PRODUCTIMPORT_API_HOST=0.0.0.0
USER 10001:10001
WORKDIR /tmp
# api, operator health (liveness/readiness), operator metrics.
EXPOSE 8080 8081 9090
# One image, three roles, so the check asks what this container runs (the process with
# PID 1): the API and the operator answer GET /healthz on their ports; the loader (or
# any one-off command) is a batch process whose health is its exit code, so the check
# passes for it rather than marking a running import unhealthy. Kubernetes ignores
# HEALTHCHECK; the chart's probes say the same thing there.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["productimport-entrypoint", "healthcheck"]
ENTRYPOINT ["productimport-entrypoint"]
CMD ["api"]
