# The canaryguard operator image, built from this source tree:
#   docker build -t canaryguard:0.1.0 .
# The base is pinned by its full version tag. For byte-for-byte reproducible builds pin its
# digest too, e.g. --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest>
# (`docker buildx imagetools inspect python:3.11.13-slim-bookworm` prints it).
# Without a registry, hack/images/operator.sh builds it on a locally made Debian base
# (PYTHON_IMAGE=canaryguard/debian-python:bookworm) from a wheelhouse, with no network.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# An optional wheelhouse (dependencies and build backend as wheels, made by
# hack/images/operator.sh): when present, pip installs from it alone, else from PyPI. The
# wildcard may match nothing; README.md keeps the list non-empty, as the classic builder needs.
# It stays in this stage: the runtime stage copies only the virtualenv.
COPY README.md dist/wheelhous[e] /wheels/
# A virtualenv in /opt, copied whole into the runtime stage (same base, same interpreter path).
# python3, not python: Debian's own python3 package has no `python` command.
RUN if ls /wheels/*.whl > /dev/null 2>&1; then offline="--no-index --find-links /wheels"; fi \
    && python3 -m venv /opt/canaryguard \
    && /opt/canaryguard/bin/pip install --no-compile ${offline:-} . \
    && /opt/canaryguard/bin/python -m compileall -q /opt/canaryguard/lib \
    && /opt/canaryguard/bin/canaryguard --help > /dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="canaryguard" \
      org.opencontainers.image.description="Kubernetes operator for safe ML model canary rollouts on Istio" \
      org.opencontainers.image.licenses="Apache-2.0"
# Bytecode was compiled at build time; the root filesystem is read-only at run time.
ENV PATH=/opt/canaryguard/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# kopf names its peering identity after the user (getpass.getuser()), which fails for a UID
# with no passwd entry: give 65532 a name. USER stays numeric below.
RUN groupadd --gid 65532 canaryguard \
    && useradd --uid 65532 --gid 65532 --no-create-home --no-log-init \
       --home-dir /nonexistent --shell /usr/sbin/nologin canaryguard
COPY --from=build /opt/canaryguard /opt/canaryguard
# A numeric, non-root user (nothing in the image runs as root): Kubernetes can then verify
# runAsNonRoot, and manifests/deployment.yaml sets the same runAsUser.
USER 65532:65532
EXPOSE 8080 9095
ENTRYPOINT ["canaryguard"]
CMD ["run", "--all-namespaces", "--log-format", "json"]
