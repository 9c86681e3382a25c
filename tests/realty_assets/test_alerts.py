"""alert_sensor on real check evaluations: a real Dagster instance records a probe asset's
check, real sensor ticks turn its changes into alerts in PostgreSQL, and a real HTTP receiver
on 127.0.0.1 takes the webhook's calls (refusing the first, to see it retried)."""

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import psycopg
import pytest

from realty_assets.alerts import alert_sensor
from realty_assets.resources import build_resources

CHECK = "probe_ok"


class Receiver(ThreadingHTTPServer):
    """Answers 503 to its first ``refusals`` calls and 204 after; keeps the bodies taken."""

    def __init__(self, refusals: int) -> None:
        self.refusals, self.bodies = refusals, []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.server.refusals > 0:
            self.server.refusals -= 1
            self.send_response(503)
        else:
            self.server.bodies.append(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:  # no access lines in the test output
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(refusals=1)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


class ProbeConfig(dg.Config):
    passed: bool


def _probe(name: str) -> dg.AssetsDefinition:
    @dg.asset(name=name, check_specs=[dg.AssetCheckSpec(CHECK, asset=name)])
    def probe(config: ProbeConfig) -> dg.MaterializeResult:
        return dg.MaterializeResult(
            check_results=[
                dg.AssetCheckResult(
                    passed=config.passed, description="fine" if config.passed else "too many"
                )
            ]
        )

    return probe


def test_a_check_that_starts_and_stops_failing_alerts_once_each(
    mlflow_settings, dagster_instance, receiver, monkeypatch
) -> None:
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    monkeypatch.setenv("REALTY_ALERT_WEBHOOK_URL", url)  # secrets reach resources by the env
    settings = mlflow_settings
    probe = _probe(f"probe_{uuid.uuid4().hex[:8]}")
    repository = dg.Definitions(assets=[probe], sensors=[alert_sensor]).get_repository_def()
    resources = build_resources(settings)
    cursor = None

    def evaluate(passed: bool | None) -> str:
        nonlocal cursor
        if passed is not None:
            config = dg.RunConfig(ops={probe.key.path[-1]: ProbeConfig(passed=passed)})
            assert dg.materialize([probe], instance=dagster_instance, run_config=config).success
        context = dg.build_sensor_context(
            instance=dagster_instance, cursor=cursor, repository_def=repository,
            resources=resources,
        )  # fmt: skip
        said = alert_sensor(context).skip_message
        cursor = context.cursor
        return said

    assert "alerts raised: none" in evaluate(passed=True)
    said = evaluate(passed=False)
    assert f"{CHECK} firing" in said and "1 failed" in said  # the receiver refused it
    assert receiver.bodies == []
    assert "1 delivered" in evaluate(passed=None)  # retried on the next tick
    assert "alerts raised: none" in evaluate(passed=False)  # still failing: no news
    assert f"{CHECK} resolved" in evaluate(passed=True)
    cursor = None
    assert "alerts raised: none" in evaluate(passed=None)  # a lost cursor raises nothing again

    firing, resolved = receiver.bodies
    assert (firing["state"], firing["check"], firing["asset"]) == (
        "firing",
        CHECK,
        probe.key.path[-1],
    )
    assert firing["description"] == "too many" and firing["partition"] is None
    assert firing["summary"] == f"{CHECK} on {probe.key.path[-1]} firing: too many"
    assert firing["dagster_run_url"] == f"{settings.dagster_url}/runs/{firing['run_id']}"
    assert resolved["state"] == "resolved" and resolved["alert_id"] > firing["alert_id"]
    with psycopg.connect(settings.database_url("clean_data")) as conn:
        rows = conn.execute(
            "SELECT state, attempts, delivered_at IS NOT NULL, last_error FROM alerts "
            "WHERE asset = %s ORDER BY alert_id",
            (probe.key.path[-1],),
        ).fetchall()
    assert rows == [("firing", 2, True, None), ("resolved", 1, True, None)]
