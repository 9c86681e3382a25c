"""The web app (Gradio), a client of the serving API and MLflow; ``ui.app`` builds it."""

import os

# Read by gradio and matplotlib at import: no telemetry or version check over the internet, and
# charts drawn off-screen.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")
