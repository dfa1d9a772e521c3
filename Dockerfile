# syntax=docker/dockerfile:1
# orderflow: one image for the worker, the webhook service, the codec server, migrations and the sandbox
# (the compose file picks the command). Multi-stage: build in a full stage, run from a slim one.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The venv is built at the path it runs from, so its scripts' shebangs stay valid in the runtime stage.
RUN python -m venv /opt/orderflow
WORKDIR /src
COPY pyproject.toml README.md ./
COPY orderflow ./orderflow
# A regular (not editable) install: the runtime stage gets the package, not a link to /src.
RUN /opt/orderflow/bin/pip install --upgrade pip \
    && /opt/orderflow/bin/pip install . \
    && /opt/orderflow/bin/orderflow --help > /dev/null

FROM ${PYTHON_IMAGE} AS runtime
# A fixed uid, so mounted secret files can be made readable to it (docs/deployment.md, "Secrets").
RUN groupadd --system --gid 10001 orderflow \
    && useradd --system --uid 10001 --gid orderflow --home-dir /var/lib/orderflow --create-home \
       --shell /usr/sbin/nologin orderflow
COPY --from=builder /opt/orderflow /opt/orderflow
ENV PATH=/opt/orderflow/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORDERFLOW_STATE_DIR=/var/lib/orderflow \
    ORDERFLOW_HEALTHCHECK_URL=http://127.0.0.1:8001/healthz
WORKDIR /var/lib/orderflow
USER orderflow:orderflow
# Webhook service, worker health and metrics, codec server.
EXPOSE 8000 8001 8888
# The worker's liveness by default; each compose service sets its own check (webhooks :8000, codec :8888).
# No curl in a slim image: the standard library is enough, and a non-2xx answer raises, so it exits 1.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['ORDERFLOW_HEALTHCHECK_URL'], timeout=3)"]
ENTRYPOINT ["orderflow"]
CMD ["--help"]
