# One image recipe for the three services (build arg SERVICE picks the console script).
# Build stage: uv resolves exactly uv.lock into a virtual environment.
FROM python:3.11-slim AS build
ENV UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock ./
COPY shared shared
COPY services services
ARG SERVICE
RUN uv sync --frozen --no-dev --no-editable --package "${SERVICE}"

# Final stage: the virtual environment only, no build tools, non-root.
FROM python:3.11-slim
ARG SERVICE
ENV PATH="/app/.venv/bin:$PATH" SERVICE_COMMAND="${SERVICE}"
COPY --from=build /app/.venv /app/.venv
RUN useradd --system --uid 10001 contacts
USER contacts
CMD ["sh", "-c", "exec $SERVICE_COMMAND"]
