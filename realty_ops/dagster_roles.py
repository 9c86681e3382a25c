"""Dagster's three long-running roles as command lines: the code location's gRPC server, the
webserver and the daemon. `realty dagster <role>` runs them in the `code` image (compose,
Kubernetes); `realty up` starts its webserver and daemon from the same functions.

The instance (dagster.yaml) and the workspace (workspace.yaml) both live in DAGSTER_HOME:
written there by `realty up` (var/dagster), baked into the image for compose, mounted from a
ConfigMap on Kubernetes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from realty.settings import Settings

BIN = Path(sys.executable).parent
CODE_LOCATION_MODULE = "realty_assets.definitions"
CODE_LOCATION_NAME = "realty"


def code_server_command(settings: Settings) -> list[str]:
    """The code location as a gRPC server on REALTY_HOST:REALTY_DAGSTER_CODE_PORT."""
    return [
        str(BIN / "dagster"), "code-server", "start",
        "-h", settings.host, "-p", str(settings.dagster_code_port),
        "-m", CODE_LOCATION_MODULE, "--location-name", CODE_LOCATION_NAME,
    ]  # fmt: skip


def webserver_command(settings: Settings, dagster_home: Path) -> list[str]:
    """The Dagster UI on REALTY_HOST:REALTY_DAGSTER_PORT."""
    return [
        str(BIN / "dagster-webserver"),
        "-h", settings.host, "-p", str(settings.dagster_port),
        "-w", str(dagster_home / "workspace.yaml"),
    ]  # fmt: skip


def daemon_command(dagster_home: Path) -> list[str]:
    """Sensors, schedules and the run queue."""
    return [str(BIN / "dagster-daemon"), "run", "-w", str(dagster_home / "workspace.yaml")]
