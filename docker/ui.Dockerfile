# syntax=docker/dockerfile:1
# The web app (`realty ui`, Gradio); it has no health route of its own, so the check loads its
# page. Built on the named context `base` (docker/base.Dockerfile): see docker/docker-bake.hcl.

# hadolint ignore=DL3006
FROM base AS ui
ENV REALTY_UI_PORT=7860
EXPOSE 7860
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["healthcheck", "http://127.0.0.1:7860/"]
CMD ["realty", "ui"]
