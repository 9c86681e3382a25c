"""The S3 switch, for real: moto's S3 server on 127.0.0.1 stands in for MinIO or AWS. With
REALTY_S3_BUCKET set, the learning loop over two batches writes its MLflow artifacts (models,
SHAP reports) and Dagster's run logs to the bucket, the production model loads back from it, and
nothing is written to the local artifact folder."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import dagster as dg
import mlflow
import psycopg
import pytest
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager

from realty.settings import Settings
from realty.store.clean import read_clean_listings
from realty_ops.sandbox import free_port
from realty_ops.stack import Stack
from serving.model_holder import ModelSlot, load_price_model, smoke_price_model
from tests.realty_assets.loop import Loop

BUCKET = "realty-artifacts"
MOTO_SERVER = Path(sys.executable).parent / "moto_server"


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 server on a free port, the bucket created, AWS variables pointing at it."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    server = subprocess.Popen(
        [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        deadline = time.monotonic() + 30
        while True:
            try:
                s3.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def s3_settings(
    pg_settings: Settings, s3_endpoint: str, start_simulator, tmp_path: Path
) -> Iterator[Settings]:
    """A fresh REALTY_HOME, an MLflow server of our own with the S3 switch on, a small source."""
    simulator = start_simulator(REALTY_SOURCE_ROWS_PER_BATCH="3000", REALTY_SOURCE_BATCHES="2")
    settings = pg_settings.model_copy(
        update={
            "home": tmp_path / "home",
            "mlflow_port": free_port(),
            "s3_bucket": BUCKET,
            "s3_endpoint_url": s3_endpoint,
            "source_url": simulator.url,
            "day": "s3",
            "price_model_name": "test-s3-price",
            "train_iterations": 80,
            "train_max_seconds": 30.0,
            "stale_after_batches": 1,
        }
    )
    previous_tracking_uri = mlflow.get_tracking_uri()
    stack = Stack(settings, only=("mlflow",))
    stack.start()
    yield settings
    stack.stop()
    mlflow.set_tracking_uri(previous_tracking_uri)


def _keys(endpoint: str, prefix: str) -> list[str]:
    pages = boto3.client("s3", endpoint_url=endpoint).get_paginator("list_objects_v2")
    return [
        obj["Key"]
        for page in pages.paginate(Bucket=BUCKET, Prefix=prefix)
        for obj in page.get("Contents", [])
    ]


def test_the_loop_keeps_its_files_in_the_bucket(
    s3_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REALTY_DAGSTER_PG_URL", s3_settings.database_url("dagster"))
    instance = dg.DagsterInstance.from_config(str(s3_settings.dagster_home))
    assert isinstance(instance.compute_log_manager, S3ComputeLogManager)
    loop = Loop(s3_settings, instance)
    try:
        # The initial baseline trains in the ingest run; b002 needs a scoring run if kept.
        assert loop.step() == [("ingest_batch", "g1-s3-b001")]
        ingest, *follow_up = loop.step()
        assert ingest == ("ingest_batch", "g1-s3-b002")
        assert follow_up in ([], [("score_batch", "g1-s3-b002")])
    finally:
        instance.dispose()

    client = mlflow.MlflowClient(s3_settings.mlflow_url)
    name = s3_settings.price_model_name
    production = client.get_model_version_by_alias(name, "production")
    keys = _keys(s3_settings.s3_endpoint_url, "mlflow/")
    run_prefix = f"/{production.run_id}/artifacts/"
    run_files = {key.split(run_prefix, 1)[1] for key in keys if run_prefix in key}
    assert {"shap/ranking.json", "shap/beeswarm.png"} <= run_files
    # The proxied artifact URI of the version maps onto the bucket's mlflow/ prefix.
    model_uri = client.get_model_version_download_uri(name, production.version)
    model_path = model_uri.removeprefix("mlflow-artifacts:/").strip("/")
    assert f"mlflow/{model_path}/MLmodel" in keys, (model_uri, keys)
    assert _keys(s3_settings.s3_endpoint_url, "dagster/compute-logs/"), "run logs in the bucket"

    # Serving's own loader takes the production version back through MLflow from the bucket.
    mlflow.set_tracking_uri(s3_settings.mlflow_url)
    slot = ModelSlot(name, load_price_model, smoke_price_model)
    attempt = slot.reload(client)
    assert attempt.outcome == "loaded", attempt.message
    assert slot.current.version == production.version
    with psycopg.connect(s3_settings.database_url("clean_data")) as conn:
        listings = read_clean_listings(conn, ["g1-s3-b002"]).head(20)
    assert (slot.current.model.predict(None, listings) > 0).all()

    # Nothing went to the local artifact folder.
    assert not s3_settings.mlflow_artifacts_dir.exists()
