"""The learning loop as the Dagster daemon drives it, for tests: sensors evaluated against the
real instance, and the runs they request executed there in process."""

from __future__ import annotations

import dagster as dg
import psycopg

from realty.settings import Settings
from realty_assets import jobs, runs, sensors
from realty_assets.assets.drift import drift_report
from realty_assets.assets.explain import shap_report
from realty_assets.assets.ingest import clean_batch, raw_batch
from realty_assets.assets.realized import realized_performance
from realty_assets.assets.score import batch_predictions
from realty_assets.assets.train import candidate_model, production_model
from realty_assets.checks import LOOP_CHECKS
from realty_assets.partitions import batch_partitions
from realty_assets.resources import build_resources

RUN_KEY_TAG = "dagster/run_key"  # what the daemon tags a sensor's run with

ASSETS = [
    raw_batch,
    clean_batch,
    realized_performance,
    drift_report,
    candidate_model,
    production_model,
    shap_report,
    batch_predictions,
]
# A verdict without its chain, as a manual materialization of drift_report leaves it.
judge_job = dg.define_asset_job(
    "judge_batch",
    selection=dg.AssetSelection.assets(raw_batch, clean_batch, drift_report),
    tags=runs.SERIAL_TAGS,
)
JOBS = [jobs.fetch_batch_job, jobs.ingest_job, jobs.train_job, jobs.score_job, judge_job]


class Loop:
    def __init__(self, settings: Settings, instance: dg.DagsterInstance) -> None:
        self.settings = settings
        self.instance = instance
        self.resources = build_resources(settings)
        self.defs = dg.Definitions(
            assets=ASSETS, asset_checks=LOOP_CHECKS, jobs=JOBS, resources=self.resources
        )
        self.cursors: dict[str, str | None] = {}

    def evaluate(self, sensor: dg.SensorDefinition):
        """One tick of ``sensor``; its cursor is kept for the next tick."""
        context = dg.build_sensor_context(
            instance=self.instance,
            resources=self.resources,
            cursor=self.cursors.get(sensor.name),
            definitions=self.defs,
        )
        result = sensor(context)
        if isinstance(result, dg.SensorResult) and result.cursor is not None:
            self.cursors[sensor.name] = result.cursor
        return result

    def tick(self, sensor: dg.SensorDefinition) -> list[dg.RunRequest]:
        """One tick of ``sensor``, with its partitions added; the runs it requests, except those
        whose run key already has a run (the daemon drops them too: other tests' verdicts)."""
        result = self.evaluate(sensor)
        requests = []
        if isinstance(result, dg.SensorResult):
            for request in result.dynamic_partitions_requests:
                self.instance.add_dynamic_partitions(
                    batch_partitions.name, list(request.partition_keys)
                )
            requests = result.run_requests
        elif isinstance(result, dg.RunRequest):
            requests = [result]
        return [request for request in requests if not self._already_run(request)]

    def _already_run(self, request: dg.RunRequest) -> bool:
        if request.run_key is None:
            return False
        runs = dg.RunsFilter(tags={RUN_KEY_TAG: request.run_key})
        return bool(self.instance.get_run_records(runs, limit=1))

    def run(self, request: dg.RunRequest, default_job: str) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def(request.job_name or default_job)
        tags = {**request.tags, **({RUN_KEY_TAG: request.run_key} if request.run_key else {})}
        result = job.execute_in_process(
            instance=self.instance, partition_key=request.partition_key, tags=tags
        )
        assert result.success
        return result

    def source_tick(self) -> list[dg.RunRequest]:
        """Ticks of the source sensor, as the daemon's would follow one another: the fetch run a
        tick requests is executed and the sensor ticks again; the ingest runs it then requests
        (not executed)."""
        requests = self.tick(sensors.source_sensor)
        for fetch in [r for r in requests if r.job_name == jobs.fetch_batch_job.name]:
            self.run(fetch, "")
            requests = self.tick(sensors.source_sensor)
        return requests

    def step(self) -> list[tuple[str, str]]:
        """One batch through the loop: source ticks and the fetch run, ingest run (the learning
        chain too when its verdict says retrain), drift tick, and the follow-up run it
        requests, if any."""
        done = []
        for request in self.source_tick():
            self.run(request, "")
            done.append((request.job_name, request.partition_key))
        for request in self.tick(sensors.drift_sensor):
            self.run(request, "")
            done.append((request.job_name, request.partition_key))
        return done

    def clean(self, query: str, *params):
        with psycopg.connect(self.settings.database_url("clean_data")) as conn:
            return conn.execute(query, params).fetchall()
