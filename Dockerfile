# ciphergrad server image: Debian bookworm + Python 3.11, non-root, data dir as a volume, TLS by default
# (docker/entrypoint.sh: a CA and server certificate generated into the volume at first start, or mounted
# ones; CIPHERGRAD_PLAINTEXT=1 opts out), healthcheck through the standard gRPC health service.
#
# Offline build (no registry, no index): see the "Docker" section of README.md.
#   docker/build-base.sh        -> ciphergrad-base:bookworm (debootstrap minbase + python3)
#   docker/fetch-wheels.sh      -> build/wheelhouse (cp311 manylinux wheels of the base dependencies)
#   EXTRA=torch docker/fetch-wheels.sh -> build/wheelhouse-torch (the twins, for the client image)
#   EXTRA=ray docker/fetch-wheels.sh   -> build/wheelhouse-ray (the Ray executor, in the server image)
#   docker build --target server -t ciphergrad:latest .   (or simply: docker/build-image.sh, which also
#   docker build --target client -t ciphergrad-client:latest .    builds the client image)
# With registry access, any Debian-based Python 3.11 image works as the base:
#   docker build --build-arg BASE_IMAGE=python:3.11-slim-bookworm --target server -t ciphergrad:latest .
ARG BASE_IMAGE=ciphergrad-base:bookworm

# ---- build stage: a virtualenv with ciphergrad and its pinned dependencies, from wheels only ----
FROM ${BASE_IMAGE} AS build
# The legacy builder leaves this stage behind as an untagged image; build-image.sh prunes it by label.
LABEL org.ciphergrad.stage=build
ENV PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/wheels \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
COPY build/wheelhouse/ /wheels/
# Dependencies first (their own cached layer): the wheelhouse holds exactly pyproject's pinned
# base dependency closure (torch only if it is a base dependency, then the CPU wheel), so nothing
# can pull CUDA wheels.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install /wheels/*.whl
# The ray extra (--executor ray, and the image's `ray start` for the compose "ray" profile's head and
# workers): the ray wheel alone, so pip keeps the base pins and takes only what ray adds from its wheelhouse.
COPY build/wheelhouse-ray/ /ray-wheels/
RUN /opt/venv/bin/pip install --find-links /ray-wheels /ray-wheels/ray-*.whl
COPY pyproject.toml setup.py* setup.cfg* MANIFEST.in* README* LICENSE* /src/
COPY ciphergrad/ /src/ciphergrad/
COPY core/ /src/core/
COPY server/ /src/server/
COPY client/ /src/client/
COPY wire/ /src/wire/
COPY proto/ /src/proto/
# Slimming: torch's C++ headers and CMake files (when torch is there) only serve to compile
# extensions, and the libraries' own test suites (`tests` dirs) are never imported (~170 MB).
# The smoke check imports what the server needs; torch is not one of them.
RUN /opt/venv/bin/pip install /src \
 && cd /opt/venv/lib/python3.11/site-packages \
 && rm -rf torch/include torch/share/cmake \
 && find . -depth -type d -name tests -exec rm -rf {} + \
 && cd / \
 && /opt/venv/bin/python -c "import grpc, grpc_health.v1, tenseal, ciphergrad.core, ciphergrad.server.app, ciphergrad.server.execution.ray_shards; print('imports ok')"

# ---- server: the runtime image (no torch: the server never runs a twin) ----
FROM ${BASE_IMAGE} AS server
# A rebuild untags the previous image; build-image.sh prunes it (and the build stage) by this label.
LABEL org.ciphergrad.stage=runtime
ARG UID=10001
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CIPHERGRAD_LISTEN=0.0.0.0:50051 \
    CIPHERGRAD_DATA_DIR=/var/lib/ciphergrad \
    CIPHERGRAD_TLS_DIR=/var/lib/ciphergrad/tls \
    CIPHERGRAD_TLS_CERT=/var/lib/ciphergrad/tls/server.pem \
    CIPHERGRAD_TLS_KEY=/var/lib/ciphergrad/tls/server.key \
    CIPHERGRAD_HEALTH_CA=/var/lib/ciphergrad/tls/ca.pem \
    CIPHERGRAD_CA_EXPORT=/var/lib/ciphergrad-ca
# /var/lib/ciphergrad-ca: where the entrypoint publishes the CA certificate (public) for client containers;
# a named volume mounted there takes this directory's owner and mode.
RUN groupadd --system --gid ${UID} ciphergrad \
 && useradd --system --uid ${UID} --gid ciphergrad --no-create-home \
            --home-dir /var/lib/ciphergrad --shell /usr/sbin/nologin ciphergrad \
 && mkdir -p /var/lib/ciphergrad /var/lib/ciphergrad-ca \
 && chown ciphergrad:ciphergrad /var/lib/ciphergrad /var/lib/ciphergrad-ca \
 && chmod 0700 /var/lib/ciphergrad \
 && chmod 0755 /var/lib/ciphergrad-ca
COPY --from=build /opt/venv /opt/venv
COPY docker/healthcheck.py /usr/local/bin/ciphergrad-healthcheck
COPY docker/entrypoint.sh /usr/local/bin/ciphergrad-entrypoint
RUN sed -i '1s|.*|#!/opt/venv/bin/python|' /usr/local/bin/ciphergrad-healthcheck \
 && chmod 0755 /usr/local/bin/ciphergrad-healthcheck /usr/local/bin/ciphergrad-entrypoint \
 && command -v openssl

USER ciphergrad
WORKDIR /var/lib/ciphergrad
# Sessions, contexts, datasets, models and job records (SQLite + ciphertext blobs).
VOLUME ["/var/lib/ciphergrad"]
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["ciphergrad-healthcheck"]
# Flags are also read from CIPHERGRAD_* variables (CIPHERGRAD_LISTEN, CIPHERGRAD_DATA_DIR, ...); the
# entrypoint sets up TLS (or, with CIPHERGRAD_PLAINTEXT=1, not) and execs ciphergrad-server with them.
ENTRYPOINT ["ciphergrad-entrypoint"]
CMD []

# ---- client: the server image plus the torch twins, for `ciphergrad demo` in a container ----
FROM build AS client-build
LABEL org.ciphergrad.stage=build
COPY build/wheelhouse-torch/ /torch-wheels/
RUN /opt/venv/bin/pip install --find-links /torch-wheels /torch-wheels/*.whl \
 && rm -rf /opt/venv/lib/python3.11/site-packages/torch/include /opt/venv/lib/python3.11/site-packages/torch/share/cmake \
 && /opt/venv/bin/python -c "import torch, ciphergrad.client.demo; print('client imports ok')"

FROM server AS client
LABEL org.ciphergrad.stage=client
COPY --from=client-build /opt/venv /opt/venv
ENTRYPOINT ["ciphergrad"]
CMD ["--help"]
