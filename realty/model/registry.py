"""The MLflow model registry: versions, the aliases ``production`` and ``previous``, the gate.

Promotion only happens through ``gate`` + ``promote``: both models scored on the same evaluation
data, the challenger must beat the champion by a stated margin, and the decision is written on
the challenger's version as tags (``gate.*``) whether it wins or loses. Aliases are MLflow 3's
way to point at a version (stages are deprecated).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models.model import ModelInfo

PRODUCTION = "production"
PREVIOUS = "previous"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    challenger_mae_usd: float
    champion_mae_usd: float | None
    champion_version: str | None

    def as_tags(self) -> dict[str, str]:
        tags = {
            "gate.decision": "promoted" if self.promote else "rejected",
            "gate.reason": self.reason,
            "gate.challenger_mae_usd": f"{self.challenger_mae_usd:.2f}",
        }
        if self.champion_mae_usd is not None:
            tags["gate.champion_mae_usd"] = f"{self.champion_mae_usd:.2f}"
            tags["gate.champion_version"] = str(self.champion_version)
        return tags


def gate(
    challenger_mae_usd: float,
    champion_mae_usd: float | None,
    margin: float,
    champion_version: str | None = None,
) -> GateDecision:
    """Promote when there is no champion, or when the challenger's dollar MAE on the shared
    evaluation data is at least ``margin`` (a fraction) below the champion's."""
    if champion_mae_usd is None:
        return GateDecision(True, "no production model yet", challenger_mae_usd, None, None)
    gain = 1 - challenger_mae_usd / champion_mae_usd
    versus = (
        f"MAE ${challenger_mae_usd:,.0f} vs ${champion_mae_usd:,.0f} of v{champion_version} "
        f"({gain:+.1%}; the margin is {margin:.0%})"
    )
    if gain >= margin:
        return GateDecision(
            True, f"beats production: {versus}", challenger_mae_usd, champion_mae_usd,
            champion_version,
        )  # fmt: skip
    return GateDecision(
        False, f"does not beat production: {versus}", challenger_mae_usd, champion_mae_usd,
        champion_version,
    )  # fmt: skip


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


@lru_cache(maxsize=4)
def load_price_model(name: str, version: str) -> Any:
    """The fitted ``realty.model.price_model.PriceModel`` of a version (versions never change, so a
    loaded one is kept)."""
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model()


def register(
    client: MlflowClient,
    name: str,
    model: ModelInfo,
    tags: dict[str, str],
    description: str,
    model_description: str = "Price of a US listing from its realtor.com fields",
) -> ModelVersion:
    """A new version of ``name`` for a model logged in a run (``mlflow.*.log_model``)."""
    try:
        client.create_registered_model(name, description=model_description)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        name,
        model.model_uri,
        run_id=model.run_id,
        tags=tags,
        description=description,
        model_id=model.model_id,
    )
    log.info("registered %s v%s", name, version.version)
    return version


def record_decision(client: MlflowClient, name: str, version: str, decision: GateDecision) -> None:
    for key, value in decision.as_tags().items():
        client.set_model_version_tag(name, version, key, value)


def promote(client: MlflowClient, name: str, version: str) -> str | None:
    """Point ``production`` at ``version`` and ``previous`` at the former champion (returned)."""
    champion = version_by_alias(client, name, PRODUCTION)
    if champion is not None and champion.version != str(version):
        client.set_registered_model_alias(name, PREVIOUS, champion.version)
    client.set_registered_model_alias(name, PRODUCTION, str(version))
    log.info("%s production: v%s (previous: %s)", name, version, champion and champion.version)
    return champion.version if champion else None


class RollbackError(RuntimeError):
    pass


def rollback(client: MlflowClient, name: str) -> tuple[str, str]:
    """Swap ``production`` and ``previous``; return (new production, new previous) versions.

    Rolling back twice restores the original state, so a rollback can itself be undone."""
    champion = version_by_alias(client, name, PRODUCTION)
    former = version_by_alias(client, name, PREVIOUS)
    if champion is None or former is None:
        raise RollbackError(
            f"{name} has no {'production' if champion is None else 'previous'} version "
            "to roll back from"
        )
    client.set_registered_model_alias(name, PRODUCTION, former.version)
    client.set_registered_model_alias(name, PREVIOUS, champion.version)
    client.set_model_version_tag(name, former.version, "rollback.from", champion.version)
    log.warning("%s rolled back: production v%s -> v%s", name, champion.version, former.version)
    return former.version, champion.version
