"""What a training leaves in the real MLflow server besides the version: the best candidate's
LoggedModel with its params and eval metrics (linked to the eval dataset), and the train and
eval splits as dataset inputs with the snapshot's digests."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from mlflow import MlflowClient

from realty.model.datasets import DIGEST_CHARS
from realty.model.training import snapshot, split_for_training


@pytest.fixture(scope="module")
def trained(production_models):
    """(client, version, train split, eval split) of the session's registered price model."""
    settings = production_models.settings
    client = MlflowClient(settings.mlflow_url)
    version = client.get_model_version(settings.price_model_name, production_models.price_version)
    # The fixture trained with key "sandbox" and the settings' seed: the same split again.
    listings = production_models.listings.assign(batch_key="sandbox")
    train, evaluation = split_for_training(listings, "sandbox", 0.2, settings.train_seed)
    return client, version, train, evaluation


def _digest(frame) -> str:
    return snapshot(frame)["content_sha256"][:DIGEST_CHARS]


def test_the_logged_model_holds_the_candidates_params_and_eval_metrics(trained) -> None:
    client, version, _, evaluation = trained
    # The REST API does not return a version's model_id yet; its source is the LoggedModel's URI.
    assert version.source.startswith("models:/m-")
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.source_run_id == version.run_id
    metrics = {metric.key: metric for metric in logged.metrics}
    assert {"mae_usd", "rmse_usd", "mae_log", "r2_log", "train_seconds"} <= set(metrics)
    mae = metrics["mae_usd"]
    assert mae.value == pytest.approx(float(version.tags["metric.mae_usd"]), rel=1e-5)
    assert (mae.dataset_name, mae.dataset_digest) == ("eval", _digest(evaluation))
    assert metrics["train_seconds"].dataset_name is None  # a timing, not a score on data
    assert logged.params["train_rows"] == client.get_run(version.run_id).data.params["train_rows"]


def test_the_runs_have_the_splits_as_datasets_with_the_snapshot_digest(trained) -> None:
    client, version, train, evaluation = trained
    whole = snapshot(pd.concat([train, evaluation]))
    assert version.tags["snapshot_sha256"] == whole["content_sha256"]
    candidate = client.get_run(version.run_id)
    parent = client.get_run(candidate.data.tags["mlflow.parentRunId"])
    for run in (candidate, parent):
        inputs = {item.dataset.name: item for item in run.inputs.dataset_inputs}
        assert set(inputs) == {"train", "eval"}
        splits = (("train", train, "training"), ("eval", evaluation, "evaluation"))
        for name, frame, context in splits:
            dataset = inputs[name].dataset
            tags = {tag.key: tag.value for tag in inputs[name].tags}
            assert dataset.digest == _digest(frame)
            assert tags["mlflow.data.context"] == context
            assert tags["snapshot_sha256"] == version.tags["snapshot_sha256"]
            assert json.loads(dataset.profile)["num_rows"] == len(frame)
            schema = {col["name"]: col for col in json.loads(dataset.schema)["mlflow_colspec"]}
            assert set(schema) == set(frame.columns)
            assert schema["price"]["type"] == "double"
            # Read from the first rows, but optional where any row lacks a value.
            optional = {column for column, spec in schema.items() if not spec["required"]}
            assert optional == set(frame.columns[frame.isna().any()])
            assert {"bed", "prev_sold_date"} <= optional
