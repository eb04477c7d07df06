# The multicloud image the Helm chart (helm/multicloud) runs: the core, the four cloud
# adapters and Ray, as a non-root user. Build from the repository root:
#
#   docker build -t REGISTRY/multicloud:0.1.0 .
#
# Base image: pinned to an exact Python patch release on Debian 12. This repository's CI has
# no container engine or registry access, so the digest could not be looked up here; pin it
# for reproducible builds where you build, e.g.
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm   # prints the digest
#   docker build --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
FROM ${PYTHON_IMAGE}

# wget: KubeRay's default readiness/liveness probes call it in the Ray containers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric UID/GID so that Kubernetes' runAsNonRoot can verify it (the chart's
# podSecurityContext defaults to the same 1000).
RUN groupadd --gid 1000 multicloud \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/multicloud \
       --shell /bin/bash multicloud \
    && mkdir -p /var/lib/multicloud \
    && chown 1000:1000 /var/lib/multicloud

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MULTICLOUD_HOME=/var/lib/multicloud
RUN python -m venv /opt/venv

WORKDIR /src
COPY pyproject.toml README.md ./
COPY multicloud ./multicloud
COPY adapters ./adapters
# One resolve for the core and every adapter (CoreWeave is a preset of kubernetes), so that
# they agree on shared dependencies; non-editable, and pip byte-compiles them here since the
# root filesystem is read-only at run.
RUN pip install --no-cache-dir . ./adapters/aws ./adapters/gcp ./adapters/azure \
    ./adapters/oci ./adapters/kubernetes ./adapters/coreweave \
    && multicloud --help >/dev/null \
    && rm -rf /src

WORKDIR /home/multicloud
USER 1000:1000
CMD ["multicloud", "--help"]
