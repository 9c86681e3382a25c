# syntax=docker/dockerfile:1
# The base every platform image starts FROM: the locked environment of `make` (uv.lock,
# `uv sync --frozen`), the project installed as a wheel, an unprivileged user. Not published: each
# image file names it `FROM base`, a named build context that docker-bake.hcl fills with this
# file's build (`contexts = { base = "target:base" }`) and compose with the image of its `migrate`
# service (`additional_contexts: {base: "service:migrate"}`). So the environment is built once,
# in one place, for the four images. No secret and no data is baked in: configuration comes from
# REALTY_* / AWS_* at run time.

# Base images by exact tag, written out in each FROM (Dependabot does not follow ARGs).
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# Build: the locked third-party packages first (cached while only our code changes), then the
# project itself, installed as a wheel so the runtime needs no source tree.
FROM python:3.11.14-slim-bookworm AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
COPY realty ./realty
COPY realty_ops ./realty_ops
COPY realty_assets ./realty_assets
COPY serving ./serving
COPY ui ./ui
COPY source ./source
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# Runtime: the environment and an unprivileged user; state under REALTY_HOME (a volume).
FROM python:3.11.14-slim-bookworm AS base
RUN groupadd --system --gid 10001 realty \
    && useradd --system --uid 10001 --gid realty --create-home realty \
    && install -d -o realty -g realty /var/lib/realty /opt/dagster/home
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 docker/healthcheck.py /usr/local/bin/healthcheck
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    REALTY_HOME=/var/lib/realty \
    REALTY_HOST=0.0.0.0
WORKDIR /var/lib/realty
# Numeric, so that Kubernetes can verify runAsNonRoot.
USER 10001:10001
# Compose's one-shot `migrate` service runs this image as it is; the images set their own command.
CMD ["realty", "migrate"]
