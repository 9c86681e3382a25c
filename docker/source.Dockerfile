# syntax=docker/dockerfile:1
# The data-API simulator (`realty source`). Built on the named context `base`
# (docker/base.Dockerfile): see docker/docker-bake.hcl.

# hadolint ignore=DL3006
FROM base AS source
ENV REALTY_SOURCE_PORT=8800
EXPOSE 8800
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["healthcheck", "http://127.0.0.1:8800/health"]
CMD ["realty", "source"]
