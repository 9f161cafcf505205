# syntax=docker/dockerfile:1
# One image for every service; the command picks which one runs:
#   docker run IMAGE                                   -> edge (the default CMD)
#   docker run IMAGE python -m services.keyring        -> keyring (gRPC)
#   docker run IMAGE python -m services.admin          -> admin
#   docker run IMAGE python -m services.simulator      -> Gemini simulator (tests, demo)
# Settings come from KEYRING_* / EDGE_* / ADMIN_* environment variables (see docs/configuration.md).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- builder
# Builds the project wheel and installs it with its dependencies into /opt/venv.
# Every dependency ships binary wheels for CPython 3.11 (grpcio, cryptography, orjson...),
# so no compiler is needed here either.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml ./
COPY services ./services
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --only-binary=:all: /wheels/*.whl \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="keyring-gemini" \
      org.opencontainers.image.description="Keyring: a distributed key pool for the Gemini API (edge, keyring, admin, simulator)"
RUN groupadd --system --gid 10001 keyring \
 && useradd --system --uid 10001 --gid keyring --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin keyring
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER 10001:10001
# edge 8080, admin 8081, simulator 8090, keyring gRPC 50051, keyring /metrics 9102
EXPOSE 8080 8081 8090 50051 9102
# HTTP services: GET $HEALTHCHECK_URL (edge's /healthz by default; admin sets
# HEALTHCHECK_URL=http://127.0.0.1:8081/healthz). keyring speaks gRPC: docker-compose.yml
# replaces this check with a grpc.health.v1 one-liner; Kubernetes ignores HEALTHCHECK and
# uses the probes in deploy/k8s.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('HEALTHCHECK_URL', 'http://127.0.0.1:8080/healthz'), timeout=3)"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "services.edge"]
