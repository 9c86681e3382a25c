"""Champion/challenger: both models scored on the same evaluation data, then the gate.

The evaluation data is the candidate's own eval split (every clean batch through the
partition, the newest included), re-derived deterministically from CLEAN. The candidate's
scores on it were recorded when it was trained; the champion is scored on it here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from realty.model import registry, rollout
from realty.model.training import evaluate
from realty.model.versions import TrainingData, version_metrics
from realty.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Challenge:
    decision: registry.GateDecision
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    production_version: str  # after the decision
    production_metrics: dict[str, float]  # production's scores on the shared eval data


def _scores(settings: Settings, version: str, data: TrainingData) -> dict[str, float]:
    model = registry.load_price_model(settings.price_model_name, version)
    return evaluate(data.eval["price"], model.predict(None, data.eval))


def challenge(
    settings: Settings, client: MlflowClient, candidate: ModelVersion, data: TrainingData
) -> Challenge:
    """Gate ``candidate`` against production on ``data.eval``. A winner becomes production, or,
    with a staged rollout and a production to protect, the challenger in shadow."""
    name = settings.price_model_name
    champion = registry.version_by_alias(client, name, registry.PRODUCTION)
    # The candidate was scored on this same eval split when it was trained (its version's
    # metric tags): loading it back from MLflow to score it again would only cost seconds.
    challenger = version_metrics(candidate)
    if champion is not None and champion.version == candidate.version:  # a re-run after promotion
        decision = registry.GateDecision(
            True, "already production", challenger["mae_usd"], None, None
        )
        return Challenge(decision, challenger, None, candidate.version, challenger)
    champion_scores = _scores(settings, champion.version, data) if champion else None
    decision = registry.gate(
        challenger["mae_usd"],
        champion_scores["mae_usd"] if champion_scores else None,
        settings.promotion_margin,
        champion.version if champion else None,
    )
    registry.record_decision(client, name, candidate.version, decision)
    if decision.promote:
        released = rollout.release(
            settings, client, name, candidate.version, "gate", decision.reason
        )
        if released.after.production == candidate.version:
            return Challenge(decision, challenger, champion_scores, candidate.version, challenger)
        return Challenge(decision, challenger, champion_scores, champion.version, champion_scores)
    log.info("kept %s v%s: %s", name, champion.version, decision.reason)
    return Challenge(decision, challenger, champion_scores, champion.version, champion_scores)
