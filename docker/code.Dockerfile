# syntax=docker/dockerfile:1
# The Dagster code location (`realty dagster code-server`, a gRPC server). The same image runs
# the webserver and the daemon with another command (`realty dagster webserver`,
# `realty dagster daemon`). Runs start as subprocesses of the code server in compose
# (DefaultRunLauncher) and as Kubernetes Jobs of this image on a cluster (K8sRunLauncher).
# Built on the named context `base` (docker/base.Dockerfile): see docker/docker-bake.hcl.

# hadolint ignore=DL3006
FROM base AS code
ENV DAGSTER_HOME=/opt/dagster/home \
    REALTY_DAGSTER_CODE_PORT=4000 \
    REALTY_DAGSTER_PORT=3000
COPY docker/dagster/dagster.yaml docker/dagster/workspace.yaml /opt/dagster/home/
EXPOSE 4000 3000
HEALTHCHECK --interval=15s --timeout=10s --start-period=120s --retries=3 \
    CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
CMD ["realty", "dagster", "code-server"]
