# The test bed's servers for a real cluster: the mesh router, model servers, load generator
# and PagerDuty receiver (python -m canaryguard_testbed.router, .modelserver, .loadgen,
# .pagerduty_receiver). Built by hack/images/testbed.sh from a context that holds only the
# wheels of canaryguard-testbed, canaryguard and their dependencies; no network is used.
ARG BASE_IMAGE=canaryguard/debian-python:bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY *.whl /wheels/
RUN python3 -m venv /opt/canaryguard-testbed \
    && /opt/canaryguard-testbed/bin/pip install --no-compile --no-index --find-links /wheels \
       canaryguard-testbed \
    && /opt/canaryguard-testbed/bin/python -m compileall -q /opt/canaryguard-testbed/lib

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="canaryguard-testbed" \
      org.opencontainers.image.description="canaryguard's test bed: router, model servers, load, PagerDuty receiver" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/canaryguard-testbed/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The same named, numeric non-root user as the operator image.
RUN groupadd --gid 65532 canaryguard \
    && useradd --uid 65532 --gid 65532 --no-create-home --no-log-init \
       --home-dir /nonexistent --shell /usr/sbin/nologin canaryguard
COPY --from=build /opt/canaryguard-testbed /opt/canaryguard-testbed
USER 65532:65532
# No entry point: each Pod names its server, e.g. python3 -m canaryguard_testbed.router ...
