# syntax=docker/dockerfile:1
# The MLflow tracking server: PostgreSQL backend (psycopg2), S3 artifact store (boto3). Only those
# three packages, at the versions of uv.lock (exported as constraints), so the server matches the
# client the platform logs with. Configured at run time by MLflow's own variables:
# MLFLOW_BACKEND_STORE_URI, MLFLOW_ARTIFACTS_DESTINATION, MLFLOW_S3_ENDPOINT_URL,
# MLFLOW_SERVER_ALLOWED_HOSTS and the AWS_* credentials.

# Base images by exact tag, written out in each FROM (Dependabot does not follow ARGs).
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM python:3.11.14-slim-bookworm AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /src
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv export --frozen --no-dev --no-emit-project --no-hashes --output-file constraints.txt \
    && uv venv /opt/venv \
    && uv pip install --python /opt/venv/bin/python --constraint constraints.txt \
        mlflow psycopg2-binary boto3

FROM python:3.11.14-slim-bookworm AS mlflow
RUN groupadd --system --gid 10001 mlflow \
    && useradd --system --uid 10001 --gid mlflow --create-home mlflow
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 docker/healthcheck.py /usr/local/bin/healthcheck
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
USER 10001:10001
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["healthcheck", "http://127.0.0.1:5000/health"]
# The embedded stack's flags (realty_ops/stack.py mlflow_command); the URIs come from the environment.
CMD ["mlflow", "server", "--serve-artifacts", "--host", "0.0.0.0", "--port", "5000", \
     "--workers", "1"]
