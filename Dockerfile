# A fedgin site (or server) as a container: FLARE's client runs here with its startup kit mounted.
# Only the runtime is installed (poc/site_install.sh, the same script CI runs in a fresh venv):
# no test tools, no plotting, no dataset converters.
#
#   docker build -t fedgin-site:cpu .
#   docker build -t fedgin-site:cuda --build-arg TORCH_VARIANT=cu128 .
#
# Then `python -m fedgin provision --out KITS --docker-image fedgin-site:cpu` writes compose files
# that run each participant from this image (poc/README.md, "A site as a container").
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

# cpu, or a CUDA build of torch (cu126, cu128, ...): the wheel brings its CUDA libraries, the host
# brings the driver (NVIDIA Container Toolkit; compose: --docker-gpus).
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ENV TORCH_VERSION=${TORCH_VERSION} \
    TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT} \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/fedgin
COPY pyproject.toml README.md ./
COPY custom ./custom
COPY poc/site_install.sh ./poc/site_install.sh
RUN bash poc/site_install.sh /opt/fedgin && rm -rf /root/.cache

# Runs as an unprivileged user; the kit is mounted at /workspace, the site's data at /data.
RUN useradd --create-home --uid 1000 fedgin
USER fedgin
WORKDIR /workspace
