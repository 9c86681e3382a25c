"""Run tags the loop's jobs, assets and sensors agree on."""

# Fetch and ingest runs queue one at a time (dagster.yaml limits this tag), so batches are
# cleaned in landing order and cross-batch de-duplication is deterministic.
SERIAL_TAGS = {"realty/serial": "ingest"}
TRIGGER_TAG = "realty/trigger"  # why a train run was requested: initial, drift, stale, ...
REASONS_TAG = "realty/reasons"  # the verdict's reasons behind it, as a JSON list
FOLLOW_UP_TAG = "realty/follow_up"  # on runs the learning-loop sensors request
# On source_sensor's fetch runs: the stream's newest landed batch when it was requested.
FETCH_AFTER_TAG = "realty/fetch_after"
