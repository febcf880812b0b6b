# syntax=docker/dockerfile:1
# Build: the locked dependencies into a virtual environment, without the embedded
# PostgreSQL (a container always has DATABASE_URL).
FROM python:3.12-slim AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/app/.venv
RUN pip install --no-cache-dir uv==0.13.8
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY app ./app
COPY migrations ./migrations
COPY alembic.ini ./
RUN uv sync --frozen --no-dev

# Run: the environment and the code only, as an unprivileged user.
FROM python:3.12-slim AS run
RUN groupadd --system coupons && useradd --system --gid coupons --no-create-home coupons
WORKDIR /app
COPY --from=build --chown=root:root /app /app
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 PORT=8000 COUPONS_ENVIRONMENT=production COUPONS_LOG_FORMAT=json
USER coupons
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/readyz')"
# Applies the migrations (behind an advisory lock), then serves; SIGTERM drains requests.
CMD ["python", "-m", "app.serve"]
