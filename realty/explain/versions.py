"""SHAP reports of registered price-model versions, logged as artifacts of the version's run
(``shap/``) so the next version's report can say what changed against it."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from realty.explain.explainer import explain
from realty.explain.ranking import ranking_from_json
from realty.explain.report import ReportFiles, write_report
from realty.explain.results import ExplanationError
from realty.model import registry
from realty.settings import Settings

log = logging.getLogger(__name__)

SHAP_DIR = "shap"


def previous_ranking(version: ModelVersion | None) -> dict | None:
    """The SHAP ranking logged for ``version``, if it has one."""
    if version is None:
        return None
    try:
        return mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{SHAP_DIR}/ranking.json")
    except (MlflowException, OSError):
        return None  # a version explained by nothing (say, the median baseline)


def compared_version(client: MlflowClient, name: str, candidate: ModelVersion) -> ModelVersion:
    """What the candidate is explained against: the version production had before the gate."""
    production = registry.version_by_alias(client, name, registry.PRODUCTION)
    if production is not None and production.version == candidate.version:
        return registry.version_by_alias(client, name, registry.PREVIOUS)
    return production


def explain_version(
    settings: Settings,
    client: MlflowClient,
    candidate: ModelVersion,
    listings: pd.DataFrame,
    directory: Path,
) -> ReportFiles | None:
    """Write and log the SHAP report of ``candidate`` on a sample of ``listings``; None when
    its estimator is not a tree model (the median baseline)."""
    model = registry.load_price_model(settings.price_model_name, candidate.version)
    against = compared_version(client, settings.price_model_name, candidate)
    try:
        explanation = explain(
            model.estimator,
            model.features(listings),
            sample_size=settings.shap_sample_rows,
            seed=settings.train_seed,
            output="log price",
        )
    except (ExplanationError, TypeError) as error:
        log.warning("v%s cannot be explained with TreeSHAP: %s", candidate.version, error)
        return None
    report = write_report(explanation, previous_ranking(against), directory)
    client.log_artifacts(candidate.run_id, str(directory), SHAP_DIR)
    return report


@dataclass(frozen=True)
class ShapSummary:
    top_features: list[str]
    changes: str  # what changed against the version compared with, for people
    markdown: str  # the whole report with its images inlined


def explain_and_log(
    settings: Settings, client: MlflowClient, candidate: ModelVersion, listings: pd.DataFrame
) -> ShapSummary | None:
    """``explain_version`` in a scratch directory (the MLflow artifacts stay)."""
    with tempfile.TemporaryDirectory(prefix="realty-shap-") as scratch:
        report = explain_version(settings, client, candidate, listings, Path(scratch))
        if report is None:
            return None
        ranking = ranking_from_json(report.ranking_json.read_text())
        return ShapSummary(
            [item.feature for item in ranking.top(5)],
            report.diff.to_markdown(),
            report.markdown_with_inline_images(),
        )
