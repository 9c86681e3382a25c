"""The Dagster code location: the one ``Definitions`` of realty.

Every run process and every start of the webserver's code server imports this module before
anything else, so the modules it imports keep MLflow, scikit-learn, CatBoost and SHAP out of
their top level: the asset, sensor and job bodies that use them import them when they run.
That halves the load (8.4 s to 4.0 s on 2 cores, 370 to 205 MB), which a fetch run, an ingest
run and a restarted webserver each wait for (tests/realty_assets/test_definitions.py).
"""

import dagster as dg

from realty.settings import get_settings
from realty_assets.alerts import alert_sensor
from realty_assets.assets.digits import digits_automation_sensor, digits_model
from realty_assets.assets.drift import drift_report
from realty_assets.assets.explain import shap_report
from realty_assets.assets.ingest import clean_batch, raw_batch
from realty_assets.assets.monitoring import (
    served_traffic,
    served_traffic_job,
    served_traffic_schedule,
)
from realty_assets.assets.realized import realized_performance
from realty_assets.assets.score import batch_predictions
from realty_assets.assets.train import candidate_model, production_model
from realty_assets.checks import LOOP_CHECKS, freshness_checks_sensor
from realty_assets.jobs import fetch_batch_job, ingest_job, rollout_job, score_job, train_job
from realty_assets.resources import build_resources
from realty_assets.schedules import source_schedule
from realty_assets.sensors import drift_sensor, freshness_sensor, rollout_sensor, source_sensor

defs = dg.Definitions(
    assets=[
        raw_batch,
        clean_batch,
        drift_report,
        candidate_model,
        production_model,
        shap_report,
        batch_predictions,
        digits_model,
        served_traffic,
        realized_performance,
    ],
    asset_checks=LOOP_CHECKS,
    jobs=[ingest_job, train_job, score_job, fetch_batch_job, rollout_job, served_traffic_job],
    schedules=[source_schedule, served_traffic_schedule],
    sensors=[
        source_sensor,
        drift_sensor,
        freshness_sensor,
        freshness_checks_sensor,
        digits_automation_sensor,
        rollout_sensor,
        alert_sensor,
    ],
    resources=build_resources(get_settings()),
    # One process per run, not per step: a step process costs ~8 s of imports on 2 cores,
    # more than the work of a 20k-row batch.
    executor=dg.in_process_executor,
)
