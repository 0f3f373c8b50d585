# syntax=docker/dockerfile:1
# The image of each service, and of the tools, from this one file: its build arguments say which
# workspace member it installs (PACKAGE) and which of its console scripts it runs (PROGRAM).
# Build from the repository root (the uv workspace); docker-compose.yml passes both, e.g.
#   docker build --build-arg PACKAGE=contacts-notifier --build-arg PROGRAM=contacts-notifier -t contacts-notifier .

# --- build: uv installs exactly what uv.lock pins for the member, no dev dependencies ------------
FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /src
# The third-party dependencies first: this layer is rebuilt only when uv.lock changes.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/
COPY services/requests/pyproject.toml services/requests/
COPY services/billing-check/pyproject.toml services/billing-check/
COPY services/notifier/pyproject.toml services/notifier/
COPY tools/pyproject.toml tools/
ARG PACKAGE
RUN uv sync --frozen --no-dev --no-install-workspace --package "${PACKAGE:?name the workspace member: --build-arg PACKAGE=contacts-requests}"
# Then the code, installed as wheels (not editable) so the final image needs no sources; a
# member's image holds only what it depends on (a service's: itself and contacts-shared).
COPY shared/src shared/src
COPY services/requests/src services/requests/src
COPY services/billing-check/src services/billing-check/src
COPY services/notifier/src services/notifier/src
COPY tools/src tools/src
RUN uv sync --frozen --no-dev --no-editable --package "$PACKAGE"

# --- final: the slim Python and the virtual environment; no uv, no compiler, not root -----------
FROM python:3.11-slim
RUN groupadd --system --gid 10001 contacts \
 && useradd --system --uid 10001 --gid contacts --no-create-home --shell /usr/sbin/nologin contacts
COPY --from=build /app/.venv /app/.venv
ARG PROGRAM
RUN : "${PROGRAM:?name the program to run: --build-arg PROGRAM=contacts-requests}"
# Every service serves /healthz, /readyz and /metrics on CONTACTS_METRICS_PORT (0 would switch
# that server off, and the HEALTHCHECK with it).
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CONTACTS_LOG_FORMAT=json \
    CONTACTS_PROGRAM=${PROGRAM} \
    CONTACTS_METRICS_PORT=9100
USER contacts
# 8000: the requests service's pages and API (CONTACTS_HTTP_PORT); 9100: health and metrics.
EXPOSE 8000 9100
# Ready = database and broker reachable (the services' one readiness check); the stdlib is enough.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=5 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('CONTACTS_METRICS_PORT', '9100'), timeout=2)"]
# SIGTERM (docker stop) makes a service finish its work in hand and exit within 10 s; `exec`
# makes the program the container's first process, so it gets the signal itself.
STOPSIGNAL SIGTERM
CMD ["sh", "-c", "exec \"$CONTACTS_PROGRAM\""]
