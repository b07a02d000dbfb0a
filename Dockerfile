# numl for CUDA nodes: the official PyTorch CUDA runtime image plus numl with every run-time extra (km3net,
# sparse), run as a non-root user. The entry point takes any numl command (docker/entrypoint.sh).
#   make docker                      (= docker build -t numl:latest .)
#   docker run --rm --gpus all --ipc=host -v "$PWD/logs:/workspace/logs" numl:latest \
#       train experiment=lensing_cnn trainer=gpu
#   docker run --rm numl:latest help          (train, evaluate, simulate, generate, attribute, export, python, bash)
# Apptainer (read-only image): numl.def, or this image converted; logs go to the working directory, caches to $HOME:
#   apptainer build numl.sif docker-daemon://numl:latest
#   apptainer run --nv numl.sif train experiment=lensing_cnn trainer=gpu
# A different CUDA / PyTorch pair: docker build --build-arg BASE_IMAGE=pytorch/pytorch:<tag> .
# (and --build-arg SPCONV_PACKAGE=spconv-cuXYZ if docker/requirements.py does not know its CUDA).
ARG BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime
FROM ${BASE_IMAGE}
ARG SPCONV_PACKAGE=""

# No NUML_ROOT and no cache paths here: logs go to the working directory (/workspace; Apptainer keeps the host's),
# caches under $HOME (docker/env.sh), so that an Apptainer image converted from this one writes nothing inside.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Layer 1, the dependencies: rebuilt only when pyproject.toml (or the script that reads it) changes, not on a
# code edit. numl's dependencies and those of every run-time extra; the sparse extra's spconv is the wheel for
# the base image's CUDA (spconv-cu126 here: the `spconv` on PyPI is CPU-only). The constraints pin the base
# image's torch packages to their installed versions, so pip keeps its CUDA torch (docker/requirements.py).
WORKDIR /opt/numl/src
COPY pyproject.toml docker/requirements.py ./
RUN python requirements.py pyproject.toml /tmp/numl-requirements \
    && pip install --no-cache-dir -r /tmp/numl-requirements/requirements.txt \
        -c /tmp/numl-requirements/constraints.txt \
    && rm -rf /tmp/numl-requirements

# Layer 2, numl itself, without dependencies (all installed above). A plain install: the configs ship inside
# the package (numl.conf), so the sources are not needed afterwards. The import check (-P: the installed numl,
# not the sources in the working directory) fails the build if a dependency is missing; spconv is only
# located, not imported (its CUDA libraries are for a GPU node; find_spec of the top-level name imports nothing).
COPY setup.py README.md ./
COPY numl ./numl
COPY hydra_plugins ./hydra_plugins
COPY conf ./conf
COPY docker/entrypoint.sh docker/env.sh /opt/numl/
RUN pip install --no-cache-dir --no-deps . \
    && python -P -c "import importlib.util, km3io, numl.train; assert importlib.util.find_spec('spconv')" \
    && rm -rf /opt/numl/src \
    && chmod 0755 /opt/numl/entrypoint.sh \
    && ln -s /opt/numl/entrypoint.sh /usr/local/bin/numl \
    && useradd --create-home --uid 1000 --shell /bin/bash numl \
    && mkdir -p /workspace \
    && chmod 1777 /workspace

# /workspace is writable by any user (sticky, like /tmp): `docker run --user "$(id -u):$(id -g)"` writes
# files owned by you into a bind-mounted logs/ or data/.
USER 1000:1000
WORKDIR /workspace
ENTRYPOINT ["/usr/local/bin/numl"]
CMD ["train"]
