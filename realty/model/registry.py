"""The MLflow model registry: versions, the aliases they are read by, the gate.

Promotion only happens through ``gate`` and a move of ``realty.model.rollout``: both models
scored on the same evaluation data, the challenger must beat the champion by a stated margin,
and the decision is written on the challenger's version as tags (``gate.*``) whether it wins or
loses. Aliases are MLflow 3's way to point at a version (stages are deprecated).
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

PRODUCTION = "production"  # serves
PREVIOUS = "previous"  # the production before; a rollback's target
CHALLENGER = "challenger"  # in rollout (realty.model.rollout): shadow, then canary

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
