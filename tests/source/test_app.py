"""The simulator over real HTTP: the course API's contract, persistence, CSV mode and faults."""

from __future__ import annotations

import csv
import gzip
import json
import time

import httpx

from realty.schema import LISTING_COLUMNS
from tests.conftest import require_sample
from tests.source.conftest import SimulatorServer

EXHAUSTED_BODY = '{"detail":"Ya se recolectó toda la información mínima necesaria"}'.encode()
BAD_GROUP_BODY = '{"detail":"Número de grupo inválido"}'.encode()


def batch(server: SimulatorServer, day: str, group_number: int = 1) -> dict:
    response = server.get("/data", group_number, day)
    assert response.status_code == 200, response.text
    return response.json()


def test_health(simulator: SimulatorServer) -> None:
    response = httpx.get(f"{simulator.url}/health")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["mode"], body["batches"], body["rows_per_batch"]) == (
        "ok",
        "generator",
        10,
        500,
    )


def test_batches_are_numbered_from_one_then_exhausted(simulator: SimulatorServer) -> None:
    for number in range(1, 11):
        payload = batch(simulator, "Exhaust", group_number=2)
        assert payload["group_number"] == 2
        assert payload["day"] == "Exhaust"
        assert payload["batch_number"] == number
        assert len(payload["data"]) == 500
        assert all(isinstance(row, list) and len(row) == 12 for row in payload["data"])
    for _ in range(2):  # and stays so
        response = simulator.get("/data", 2, "Exhaust")
        assert response.status_code == 400
        assert response.content == EXHAUSTED_BODY
        assert response.headers["content-type"] == "application/json"


def test_bad_group_numbers_answer_400(simulator: SimulatorServer) -> None:
    for group_number in (0, 11, -1):
        for path in ("/data", "/restart_data_generation"):
            response = simulator.get(path, group_number, "Tuesday")
            assert response.status_code == 400
            assert response.content == BAD_GROUP_BODY


def test_missing_or_blank_parameters_are_refused(simulator: SimulatorServer) -> None:
    assert httpx.get(f"{simulator.url}/data", params={"group_number": 1}).status_code == 422
    assert simulator.get("/data", 1, " ").status_code == 422
    assert httpx.get(f"{simulator.url}/data", params={"day": "Tuesday"}).status_code == 422


def test_same_group_and_day_deliver_the_same_bytes(simulator: SimulatorServer) -> None:
    first = simulator.get("/data", 1, "Determinism")
    simulator.get("/restart_data_generation", 1, "Determinism")
    again = simulator.get("/data", 1, "Determinism")
    assert first.content == again.content
    other_day = batch(simulator, "Determinism-2")
    assert other_day["batch_number"] == 1
    assert other_day["data"] != first.json()["data"]
    other_group = batch(simulator, "Determinism", group_number=3)
    assert other_group["data"] != first.json()["data"]


def test_restart_data_generation_starts_the_day_over(simulator: SimulatorServer) -> None:
    for number in (1, 2, 3):
        assert batch(simulator, "Restart")["batch_number"] == number
    other = batch(simulator, "Restart-other")
    response = simulator.get("/restart_data_generation", 1, "Restart")
    assert response.status_code == 200
    assert response.json()["ok"] is True
    assert batch(simulator, "Restart")["batch_number"] == 1
    assert batch(simulator, "Restart-other")["batch_number"] == other["batch_number"] + 1


def test_counters_survive_a_simulator_restart(launch_simulator) -> None:
    server = launch_simulator(rows_per_batch=50, batches=3)
    assert batch(server, "Persist")["batch_number"] == 1
    second = server.get("/data", 1, "Persist").content
    server.restart()  # a new process on the same state file
    assert batch(server, "Persist")["batch_number"] == 3
    assert server.get("/data", 1, "Persist").content == EXHAUSTED_BODY
    assert json.loads(server.config.state_file.read_text()) == {"1|persist": 3}
    server.get("/restart_data_generation", 1, "Persist")
    assert json.loads(server.config.state_file.read_text()) == {}
    batch(server, "Persist")
    assert server.get("/data", 1, "Persist").content == second  # the same batch 2 as before


def test_rows_as_objects(launch_simulator) -> None:
    server = launch_simulator(rows_per_batch=20, row_format="object")
    rows = batch(server, "Objects")["data"]
    assert all(list(row) == list(LISTING_COLUMNS) for row in rows)


def test_csv_mode_serves_the_real_file_in_ten_consecutive_slices(launch_simulator) -> None:
    sample = require_sample()
    with gzip.open(sample, "rt", newline="") as file:
        reader = csv.reader(file)
        header = next(reader)
        expected = [[value or None for value in row] for row in reader]
    assert header == list(LISTING_COLUMNS)
    server = launch_simulator(csv=sample)
    assert server.get("/health").json()["mode"] == "csv"
    slices = [batch(server, "Sample") for _ in range(10)]
    assert server.get("/data", 1, "Sample").content == EXHAUSTED_BODY
    assert [s["batch_number"] for s in slices] == list(range(1, 11))
    sizes = [len(s["data"]) for s in slices]
    assert max(sizes) - min(sizes) <= 1
    assert slices[0]["data"][:3] == expected[:3]  # the file's first rows, as written
    delivered = [row for s in slices for row in s["data"]]
    assert delivered == expected  # every row once, in file order


def test_transient_failures_do_not_use_up_a_batch(simulator: SimulatorServer) -> None:
    simulator.set_faults(fail_next=2)
    for _ in range(2):
        response = simulator.get("/data", 1, "Flaky")
        assert response.status_code == 503
        assert response.json() == {"detail": "Falla transitoria simulada"}
    assert batch(simulator, "Flaky")["batch_number"] == 1
    simulator.set_faults(fail_every=2)
    assert simulator.get("/data", 1, "Flaky").status_code == 200
    assert simulator.get("/data", 1, "Flaky").status_code == 503
    assert batch(simulator, "Flaky")["batch_number"] == 3


def test_empty_batches_still_count(simulator: SimulatorServer) -> None:
    assert len(batch(simulator, "Empty")["data"]) == 500
    simulator.set_faults(empty_next=2)
    empties = [batch(simulator, "Empty") for _ in range(2)]
    assert [(b["batch_number"], b["data"]) for b in empties] == [(2, []), (3, [])]
    assert len(batch(simulator, "Empty")["data"]) == 500


def test_malformed_rows_are_deterministic(simulator: SimulatorServer) -> None:
    simulator.set_faults(malformed_fraction=0.2)
    first = simulator.get("/data", 1, "Malformed")
    rows = first.json()["data"]
    whole = [row for row in rows if isinstance(row, list) and len(row) == 12]
    assert 50 < len(rows) - len(whole) < 150
    assert any(row[2] == "call for price" for row in whole)
    simulator.get("/restart_data_generation", 1, "Malformed")
    assert simulator.get("/data", 1, "Malformed").content == first.content


def test_latency_and_admin_route(simulator: SimulatorServer) -> None:
    simulator.set_faults(latency_s=0.5)
    assert httpx.get(f"{simulator.url}/admin/faults").json()["latency_s"] == 0.5
    started = time.perf_counter()
    batch(simulator, "Slow")
    assert time.perf_counter() - started >= 0.5
    refused = httpx.post(f"{simulator.url}/admin/faults", json={"latency": 1})
    assert refused.status_code == 422  # unknown fault names are not silently ignored


def test_realty_source_serves_the_settings(start_simulator) -> None:
    """`realty source` (what `realty up` runs) builds its config from the REALTY_ settings."""
    server = start_simulator(REALTY_SOURCE_ROWS_PER_BATCH="7", REALTY_SOURCE_BATCHES="2")
    health = httpx.get(f"{server.url}/health").json()
    assert (health["rows_per_batch"], health["batches"]) == (7, 2)
    params = {"group_number": 1, "day": "Settings"}
    assert len(httpx.get(f"{server.url}/data", params=params).json()["data"]) == 7


def test_a_failure_after_counting_uses_up_the_batch(simulator: SimulatorServer) -> None:
    simulator.set_faults(advance_and_fail_next=1)
    response = simulator.get("/data", 1, "Lost")
    assert response.status_code == 503
    assert response.json() == {"detail": "Falla transitoria simulada"}
    assert batch(simulator, "Lost")["batch_number"] == 2  # batch 1 was counted


def test_truncated_bodies_are_counted(simulator: SimulatorServer) -> None:
    simulator.set_faults(truncate_next=1)
    cut = simulator.get("/data", 1, "Truncated")
    assert batch(simulator, "Truncated")["batch_number"] == 2
    simulator.get("/restart_data_generation", 1, "Truncated")
    whole = simulator.get("/data", 1, "Truncated").content
    assert cut.status_code == 200 and cut.content == whole[: len(whole) // 2]


def test_relabelled_batches(simulator: SimulatorServer) -> None:
    simulator.set_faults(relabel_next=1, relabel={"batch_number": -1, "day": "Other"})
    relabelled = batch(simulator, "Relabel")
    assert (relabelled["batch_number"], relabelled["day"]) == (-1, "Other")
    assert batch(simulator, "Relabel")["batch_number"] == 2


def test_unstorable_text_is_escaped_in_the_json(simulator: SimulatorServer) -> None:
    simulator.set_faults(unstorable_next=1)
    response = simulator.get("/data", 1, "Unstorable")
    assert b'"Nul\\u0000City"' in response.content and b"\\ud800" in response.content
    rows = json.loads(response.content)["data"]
    assert [row[7] for row in rows[:2]] == ["Nul\x00City"] * 2
    assert rows[0][6] == "Lone \ud800 Street" and rows[2][7] != "Nul\x00City"
    assert b"\\u0000" not in simulator.get("/data", 1, "Unstorable").content
