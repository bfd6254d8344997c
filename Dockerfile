# syntax=docker/dockerfile:1
# claude-status-exporter: is Claude down, degraded, or is it just me?
#
#   docker build -t claude-status-exporter .
#   docker run -p 10529:10529 --sysctl net.ipv4.ping_group_range="0 2147483647" claude-status-exporter
#
# tests/test_dockerfile.py runs the same pip commands as the two stages below (wheels built from
# the same COPY context, installed with --no-index into a fresh environment, run as uid 10001).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the exporter and every dependency as wheels --------------------------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime: only the installed wheels, no compiler, no package manager use -----------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="claude-status-exporter" \
      org.opencontainers.image.description="Prometheus exporter: is Claude down, degraded, or is it just me?" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/claude-status-exporter/claude-status-exporter" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 exporter \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin exporter
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels claude-status-exporter==${VERSION}
USER 10001:10001
EXPOSE 10529
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:10529/-/healthy', timeout=4)"]
ENTRYPOINT ["claude-status-exporter"]
