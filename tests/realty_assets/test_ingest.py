"""Batches through the Dagster code location into real PostgreSQL: sensor ticks evaluated against
the real instance, runs materialized against it."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg
import httpx
import psycopg
import pytest

from realty.settings import Settings
from realty.store.clean import batches_through, read_clean_listings
from realty_assets.assets.ingest import clean_batch, raw_batch
from realty_assets.checks import source_lossless
from realty_assets.jobs import fetch_batch_job, ingest_job
from realty_assets.partitions import batch_partitions
from realty_assets.resources import build_resources
from realty_assets.schedules import source_schedule
from realty_assets.sensors import source_sensor
from realty_ops.status import ingestion_summary
from tests.conftest import require_sample
from tests.realty_assets.loop import ASSETS, RUN_KEY_TAG


class Ingestion:
    """Drives the source sensor and the runs it requests, as the daemon would."""

    def __init__(
        self, settings: Settings, instance: dg.DagsterInstance, url: str, day: str
    ) -> None:
        self.settings = settings.model_copy(
            update={"source_url": url, "day": day, "source_backoff_s": 0.05}
        )
        self.instance = instance
        self.resources = build_resources(self.settings)

    def tick(self) -> dg.SensorResult | dg.RunRequest | dg.SkipReason:
        context = dg.build_sensor_context(instance=self.instance, resources=self.resources)
        result = source_sensor(context)
        if isinstance(result, dg.SensorResult):
            for request in result.dynamic_partitions_requests:
                self.instance.add_dynamic_partitions(
                    batch_partitions.name, list(request.partition_keys)
                )
        return result

    def materialize(self, key: str) -> dg.ExecuteInProcessResult:
        result = dg.materialize(
            [raw_batch, clean_batch],
            partition_key=key,
            instance=self.instance,
            resources=self.resources,
        )
        assert result.success
        return result

    def fetch(self) -> dg.ExecuteInProcessResult:
        """A source tick, and the fetch run it requests executed (whether it succeeds or not)."""
        request = self.tick()
        assert isinstance(request, dg.RunRequest), request
        assert request.job_name == fetch_batch_job.name
        return fetch_batch_job.execute_in_process(
            instance=self.instance,
            resources=self.resources,
            tags={**request.tags, RUN_KEY_TAG: request.run_key},
            raise_on_error=False,
        )

    def logged(self, result: dg.ExecuteInProcessResult) -> list[str]:
        """The messages of a run's event log, as the Dagster UI shows them."""
        return [entry.user_message for entry in self.instance.all_logs(result.run_id)]

    def tick_and_run(self) -> list[str]:
        """A fetch run (the sensor requests it), then the ingest runs of the next tick."""
        assert self.fetch().success
        result = self.tick()
        keys = [request.partition_key for request in getattr(result, "run_requests", [])]
        for key in keys:
            self.materialize(key)
        return keys

    def raw(self, query: str, *params):
        with psycopg.connect(self.settings.database_url("raw_data")) as conn:
            return conn.execute(query, params).fetchall()

    def clean(self, query: str, *params):
        with psycopg.connect(self.settings.database_url("clean_data")) as conn:
            return conn.execute(query, params).fetchall()

    def source_check(self) -> dg.AssetCheckResult:
        """The source_lossless asset check, evaluated with this ingestion's resources."""
        return source_lossless(postgres=self.resources["postgres"], mlflow=self.resources["mlflow"])


def set_faults(simulator, **modes) -> None:
    httpx.post(f"{simulator.url}/admin/faults", json=modes).raise_for_status()


@pytest.fixture
def ingestion(pg_settings, dagster_instance, start_simulator, request):
    def make(day: str, **simulator_env: str) -> tuple[Ingestion, object]:
        simulator = start_simulator(**simulator_env)
        return Ingestion(pg_settings, dagster_instance, simulator.url, day), simulator

    return make


def test_two_batches_land_clean_reconcile_and_pass_checks(ingestion) -> None:
    run, _ = ingestion("twobatches", REALTY_SOURCE_ROWS_PER_BATCH="2000", REALTY_SOURCE_BATCHES="3")
    fetched = run.fetch()  # the tick only requests the fetch run; the run lands the batch
    assert fetched.success and run.raw(
        "SELECT batch_key FROM raw_batches WHERE batch_key LIKE 'g1-twobatches-%%'"
    ) == [("g1-twobatches-b001",)]
    # realty's own log line (logger realty.ingest.landing) is in the run's event log
    # (python_logs in dagster.yaml), beside the op's.
    assert "landed g1-twobatches-b001 (2000 rows, new=True)" in run.logged(fetched)
    [ingest] = run.tick().run_requests
    assert (ingest.run_key, ingest.job_name) == ("g1-twobatches-b001", "ingest_batch")
    run.materialize(ingest.partition_key)
    assert run.tick_and_run() == ["g1-twobatches-b002"]

    for key in ("g1-twobatches-b001", "g1-twobatches-b002"):
        [(raw_rows,)] = run.raw("SELECT count(*) FROM raw_listings WHERE batch_key = %s", key)
        [(clean_rows, rejected_rows, reasons)] = run.clean(
            "SELECT clean_rows, rejected_rows, rejects_by_reason FROM clean_batches "
            "WHERE batch_key = %s",
            key,
        )
        assert raw_rows == 2000 == clean_rows + rejected_rows
        assert rejected_rows == sum(reasons.values()) > 0  # the simulator sends dirt

    result = run.materialize("g1-twobatches-b002")  # re-run: same outcome, no duplicates
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == dict.fromkeys(
        ("schema", "null_fractions", "value_ranges", "unique_keys", "reconciliation"), True
    )
    [(listings,)] = run.clean(
        "SELECT count(*) FROM clean_listings WHERE batch_key LIKE 'g1-twobatches-%%'"
    )
    [(accounted,)] = run.clean(
        "SELECT sum(clean_rows) FROM clean_batches WHERE batch_key LIKE 'g1-twobatches-%%'"
    )
    assert listings == accounted

    with psycopg.connect(run.settings.database_url("clean_data")) as conn:
        keys = batches_through(conn, "g1-twobatches-b002")
        typed = read_clean_listings(conn, keys)
    assert keys == ["g1-twobatches-b001", "g1-twobatches-b002"]
    mine = typed[typed.batch_key.str.startswith("g1-twobatches-")]
    assert len(mine) == listings
    assert str(mine["bed"].dtype) == "Int64" and mine["price"].dtype == "float64"
    assert mine["prev_sold_date"].dropna().map(type).eq(date).all()
    materialization = result.asset_materializations_for_node("clean_batch")[0]
    assert {"raw_rows", "clean_rows", "rejected_rows", "null_fractions", "summary"} <= set(
        materialization.metadata
    )


def test_refetching_a_batch_lands_nothing_new(ingestion) -> None:
    run, simulator = ingestion(
        "refetch", REALTY_SOURCE_ROWS_PER_BATCH="500", REALTY_SOURCE_BATCHES="3"
    )
    assert run.tick_and_run() == ["g1-refetch-b001"]
    httpx.get(
        f"{simulator.url}/restart_data_generation", params={"group_number": 1, "day": "refetch"}
    )
    fetched = run.fetch()  # the source delivers batch 1 again: same content, already landed
    assert fetched.success
    assert any("re-sent g1-refetch-b001" in line for line in run.logged(fetched))
    assert isinstance(run.tick(), dg.RunRequest), "no ingest run again; the next fetch instead"
    assert run.raw("SELECT count(*) FROM raw_batches WHERE batch_key LIKE 'g1-refetch-%%'") == [
        (1,)
    ]
    assert run.raw("SELECT count(*) FROM raw_listings WHERE batch_key LIKE 'g1-refetch-%%'") == [
        (500,)
    ]


def test_lost_raw_rows_are_respread_from_the_payload(ingestion) -> None:
    run, _ = ingestion("respread", REALTY_SOURCE_ROWS_PER_BATCH="400", REALTY_SOURCE_BATCHES="2")
    [key] = run.tick_and_run()
    before = run.raw("SELECT * FROM raw_listings WHERE batch_key = %s ORDER BY row_index", key)
    with psycopg.connect(run.settings.database_url("raw_data")) as conn:
        conn.execute("DELETE FROM raw_listings WHERE batch_key = %s AND row_index >= 100", (key,))

    result = run.materialize(key)

    [materialization] = result.asset_materializations_for_node("raw_batch")
    assert materialization.metadata["respread"].value is True
    after = run.raw("SELECT * FROM raw_listings WHERE batch_key = %s ORDER BY row_index", key)
    assert after == before and len(after) == 400
    [again] = run.materialize(key).asset_materializations_for_node("raw_batch")
    assert again.metadata["respread"].value is False


def test_sensor_stops_when_the_source_is_exhausted_and_after_a_restart(ingestion) -> None:
    run, simulator = ingestion(
        "exhaust", REALTY_SOURCE_ROWS_PER_BATCH="300", REALTY_SOURCE_BATCHES="2"
    )
    assert run.tick_and_run() == ["g1-exhaust-b001"]
    assert run.tick_and_run() == ["g1-exhaust-b002"]
    assert run.tick_and_run() == []  # the fetch run records that the source is done
    # The sensor does not request a fetch run again, not even after a restart: with the
    # simulator gone a fetch would fail, and the tick skips cleanly.
    simulator.stop()
    skipped = run.tick()
    assert isinstance(skipped, dg.SkipReason) and "delivered every batch" in skipped.skip_message
    assert run.raw("SELECT count(*) FROM raw_batches WHERE batch_key LIKE 'g1-exhaust-%%'") == [
        (2,)
    ]


def test_the_tick_never_calls_the_source(ingestion) -> None:
    """The source sensor's tick reads only PostgreSQL and the run storage: with the source gone
    it still requests the fetch run, which fails, and the retry is a new run key."""
    run, simulator = ingestion("lighttick", REALTY_SOURCE_ROWS_PER_BATCH="100")
    simulator.stop()
    failed = run.fetch()
    assert not failed.success
    assert failed.dagster_run.tags["dagster/run_key"] == "fetch-after-g1-lighttick-start-1"
    retry = run.tick()
    assert isinstance(retry, dg.RunRequest)
    assert retry.run_key == "fetch-after-g1-lighttick-start-2"
    assert retry.tags == {"realty/fetch_after": "g1-lighttick-start"}
    assert run.raw("SELECT count(*) FROM raw_batches WHERE batch_key LIKE 'g1-lighttick-%%'") == [
        (0,)
    ]


def test_real_sample_through_the_whole_path(ingestion) -> None:
    sample = require_sample()
    run, _ = ingestion("sample", REALTY_SOURCE_CSV=str(sample))
    keys = []
    while new := run.tick_and_run():
        keys += new
    assert len(keys) == 10
    [(raw_rows,)] = run.raw("SELECT count(*) FROM raw_listings WHERE batch_key LIKE 'g1-sample-%%'")
    assert raw_rows == 37_655  # every row of the file, once
    [(clean_rows, rejected_rows)] = run.clean(
        "SELECT sum(clean_rows), sum(rejected_rows) FROM clean_batches "
        "WHERE batch_key LIKE 'g1-sample-%%'"
    )
    assert clean_rows + rejected_rows == raw_rows
    assert 0.6 * raw_rows < clean_rows < raw_rows


def test_faults_lose_nothing(ingestion) -> None:
    run, simulator = ingestion(
        "faults", REALTY_SOURCE_ROWS_PER_BATCH="400", REALTY_SOURCE_BATCHES="4"
    )

    def faults(**modes) -> None:
        set_faults(simulator, **modes)

    faults(fail_next=2)  # transient 5xx: retried within the fetch run
    assert run.tick_and_run() == ["g1-faults-b001"]

    faults(fail_next=100)  # the source is down: the fetch run fails, nothing is lost or advanced
    failed = run.fetch()
    [failure] = [e for e in failed.all_events if e.is_step_failure]
    assert "data API unavailable" in failure.step_failure_data.error.message

    faults(latency_s=0.3, malformed_fraction=0.1)  # slow and sloppy
    assert run.tick_and_run() == ["g1-faults-b002"]  # no batch number was skipped
    [(raw_rows, clean_rows, reasons)] = run.clean(
        "SELECT raw_rows, clean_rows, rejects_by_reason FROM clean_batches WHERE batch_key = %s",
        "g1-faults-b002",
    )
    assert raw_rows == 400 and clean_rows + sum(reasons.values()) == 400
    assert reasons.get("missing_price", 0) + reasons.get("unparseable_number", 0) >= 20

    faults(empty_next=1)  # an empty batch is a batch: landed, accounted, zero rows
    assert run.tick_and_run() == ["g1-faults-b003"]
    assert run.clean(
        "SELECT raw_rows, clean_rows FROM clean_batches WHERE batch_key = 'g1-faults-b003'"
    ) == [(0, 0)]


def test_a_batch_failing_a_blocking_check_stops_before_drift(ingestion) -> None:
    """Reconciliation (like schema) is blocking: a batch whose CLEAN rows do not add up to its
    RAW rows fails its ingest run at clean_batch, and no step after it runs."""
    run, _ = ingestion("badbatch", REALTY_SOURCE_ROWS_PER_BATCH="500", REALTY_SOURCE_BATCHES="2")
    assert run.fetch().success
    [ingest] = run.tick().run_requests
    key = ingest.partition_key
    defs = dg.Definitions(assets=ASSETS, jobs=[ingest_job], resources=run.resources)
    # A fault on the way into CLEAN: the batch's rejected rows are silently dropped.
    lose_rejects = f"""
        CREATE FUNCTION lose_rejects() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN IF NEW.batch_key = '{key}' THEN RETURN NULL; END IF; RETURN NEW; END $$;
        CREATE TRIGGER lose_rejects BEFORE INSERT ON rejected_listings
            FOR EACH ROW EXECUTE FUNCTION lose_rejects();
    """
    with psycopg.connect(run.settings.database_url("clean_data"), autocommit=True) as conn:
        conn.execute(lose_rejects)
        try:
            result = defs.resolve_job_def(ingest_job.name).execute_in_process(
                instance=run.instance, partition_key=key, raise_on_error=False
            )
        finally:
            conn.execute("DROP FUNCTION lose_rejects() CASCADE")

    assert not result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["reconciliation"].passed and checks["reconciliation"].blocking
    assert checks["schema"].passed and checks["schema"].blocking
    assert not checks["value_ranges"].blocking
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "clean_batch"
    assert "blocking asset check" in failure.step_failure_data.error.message
    ran = {e.step_key for e in result.all_events if e.is_step_start}
    assert ran == {"raw_batch", "clean_batch"}  # no drift_report, training or scoring step
    assert run.clean("SELECT count(*) FROM drift_reports WHERE batch_key = %s", key) == [(0,)]


def test_a_schedule_tick_fetches_the_batch_the_sensor_then_ingests(ingestion) -> None:
    """source_schedule, on the cron the course's Airflow DAG declares: a real tick requests the
    fetch run, the run lands the next batch, and the source sensor requests its ingest run."""
    run, _ = ingestion("scheduled", REALTY_SOURCE_ROWS_PER_BATCH="300", REALTY_SOURCE_BATCHES="2")
    assert source_schedule.cron_schedule == "*/5 * * * *"
    context = dg.build_schedule_context(
        instance=run.instance,
        resources=run.resources,
        scheduled_execution_time=datetime(2026, 12, 2, 14, 5, tzinfo=UTC),
    )
    [request] = source_schedule.evaluate_tick(context).run_requests
    fetched = fetch_batch_job.execute_in_process(
        instance=run.instance, resources=run.resources, tags=request.tags
    )
    assert fetched.success and fetched.dagster_run.tags["realty/serial"] == "ingest"
    assert run.raw("SELECT batch_key FROM raw_batches WHERE batch_key LIKE 'g1-scheduled-%%'") == [
        ("g1-scheduled-b001",)
    ]
    [ingest] = run.tick().run_requests
    assert (ingest.job_name, ingest.run_key) == ("ingest_batch", "g1-scheduled-b001")
    run.materialize(ingest.partition_key)
    assert run.clean(
        "SELECT raw_rows FROM clean_batches WHERE batch_key = 'g1-scheduled-b001'"
    ) == [(300,)]


def test_source_faults_lose_nothing_and_each_is_visible(ingestion) -> None:
    """The data-API faults of issue 14 through the simulator's hooks, each met by a real fetch
    run: a batch counted then failed, a truncated body, a batch number of -1, text PostgreSQL
    cannot store. Each shows in the source_lossless check and `realty status`; after a restart of
    the source every batch is landed once: 0 lost, 0 duplicated."""
    run, simulator = ingestion(
        "lossless", REALTY_SOURCE_ROWS_PER_BATCH="300", REALTY_SOURCE_BATCHES="6"
    )
    landed = (
        "SELECT batch_number, row_count FROM raw_batches "
        "WHERE batch_key LIKE 'g1-lossless-%%' ORDER BY 1"
    )

    set_faults(simulator, advance_and_fail_next=1)  # batch 1 counted, then a 503
    assert run.tick_and_run() == ["g1-lossless-b002"]  # called again: batch 2, and a gap
    check = run.source_check()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["open_gaps"].value == ["1-1"]
    assert "batch 2 came where 1 was expected; since the first batch: 1 failed" in check.description

    for fault in ({"truncate_next": 1}, {"relabel_next": 1, "relabel": {"batch_number": -1}}):
        set_faults(simulator, **fault)  # batches 3 and 5 are counted and quarantined
        fetched = run.fetch()
        assert fetched.success and any("quarantined" in line for line in run.logged(fetched))
        assert run.tick_and_run() == [f"g1-lossless-b{4 if 'truncate_next' in fault else 6:03d}"]
    assert run.raw(landed) == [(2, 300), (4, 300), (6, 300)]
    check = run.source_check()
    assert check.metadata["open_gaps"].value == ["1-1", "3-3", "5-5"]
    assert check.metadata["quarantined_answers"].value == 2
    assert "batch_number -1 is not a whole number" in check.description
    summary = ingestion_summary(run.settings).splitlines()[-1]
    assert summary.startswith(
        "source (group 1, lossless): 3 batches never arrived (3 gaps), 2 answers quarantined, "
        "1 failed calls"
    )

    set_faults(simulator, unstorable_next=1)
    httpx.get(
        f"{simulator.url}/restart_data_generation", params={"group_number": 1, "day": "lossless"}
    )
    keys = []
    for _ in range(7):  # batches 1 to 6 again (2, 4 and 6 were landed), then "no more"
        keys += run.tick_and_run()
    assert isinstance(run.tick(), dg.SkipReason)
    assert keys == ["g1-lossless-b001", "g1-lossless-b003", "g1-lossless-b005"]
    assert run.raw(landed) == [(n, 300) for n in range(1, 7)]  # 0 lost
    assert run.raw("SELECT count(*) FROM raw_listings WHERE batch_key LIKE 'g1-lossless-%%'") == [
        (1800,)
    ]  # 0 duplicated
    [(cities,)] = run.raw(
        "SELECT count(*) FROM raw_listings "
        "WHERE batch_key = 'g1-lossless-b001' AND city = 'Nul\ufffdCity'"
    )
    assert cities == 2
    [materialization] = run.materialize("g1-lossless-b001").asset_materializations_for_node(
        "raw_batch"
    )
    assert materialization.metadata["sanitized_values"].value == 4
    assert run.clean(
        "SELECT sum(clean_rows + rejected_rows) FROM clean_batches "
        "WHERE batch_key LIKE 'g1-lossless-%%'"
    ) == [(1800,)]
    check = run.source_check()
    assert check.metadata["missing_batches"].value == 0
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN  # the 2 kept apart
