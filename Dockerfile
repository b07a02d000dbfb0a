# numl for CUDA nodes: the official PyTorch CUDA runtime image plus numl, run as a non-root user.
#   make docker                      (= docker build -t numl:latest .)
#   docker run --rm --gpus all --ipc=host -v "$PWD/logs:/workspace/logs" numl:latest \
#       experiment=lensing_cnn trainer=gpu
#   apptainer build numl.sif docker-daemon://numl:latest
#   apptainer run --nv numl.sif experiment=lensing_cnn trainer=gpu
# A different CUDA / PyTorch pair: docker build --build-arg BASE_IMAGE=pytorch/pytorch:<tag> .
ARG BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NUML_ROOT=/workspace \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /opt/numl
COPY pyproject.toml setup.py README.md ./
COPY numl ./numl
COPY hydra_plugins ./hydra_plugins
COPY conf ./conf
# The base image's torch (CUDA build) satisfies numl's torch requirement and is kept. A plain install:
# the configs ship inside the package (numl.conf), so the sources are not needed afterwards. DL3013
# (pin versions) misreads the local path with extras as a package name; numl's own pyproject.toml
# bounds the versions.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[km3net]" \
    && rm -rf /opt/numl \
    && useradd --create-home --uid 1000 --shell /bin/bash numl \
    && mkdir -p /workspace \
    && chown numl:numl /workspace

USER 1000:1000
WORKDIR /workspace
ENTRYPOINT ["python", "-m", "numl.train"]
