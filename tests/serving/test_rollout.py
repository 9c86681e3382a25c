"""A rollout through real uvicorn, MLflow and PostgreSQL: shadow rows pair 1:1 with the answered
ones, the canary gets its share of listings, always the same ones, and no request fails
through the moves."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from functools import partial

import httpx
import psycopg
import pytest
from mlflow import MlflowClient
from sklearn.datasets import load_digits

from realty.model import guardrails, rollout
from realty_ops.sandbox import ServingProcess, copy_version, register_price_model
from serving.schemas import EXAMPLE_LISTING

ROLLOUT_MODEL = "realty-price-rollout"
ROLLOUT_DIGITS = "digits-rollout"
LISTINGS = 10_000
REQUEST_LISTINGS = 1_000


def listings() -> list[dict]:
    """Distinct listings: each its own street (the identity the canary hashes)."""
    return [{**EXAMPLE_LISTING, "street": 1_000_000 + i} for i in range(LISTINGS)]


class Rollout:
    def __init__(self, production_models) -> None:
        self.settings = production_models.settings.model_copy(
            update={"price_model_name": ROLLOUT_MODEL, "digits_model_name": ROLLOUT_DIGITS}
        )
        self.client = MlflowClient(self.settings.mlflow_url)
        source = ("realty-price", production_models.price_version)
        self.champion = copy_version(self.client, ROLLOUT_MODEL, *source)
        self.challenger = copy_version(self.client, ROLLOUT_MODEL, *source)
        rollout.promote(self.settings, self.client, ROLLOUT_MODEL, self.champion, "test", "v1")
        digits = ("digits", production_models.digits_version)
        self.digits = [copy_version(self.client, ROLLOUT_DIGITS, *digits) for _ in range(2)]
        rollout.promote(self.settings, self.client, ROLLOUT_DIGITS, self.digits[0], "test", "v1")
        self.server = ServingProcess(self.settings, REALTY_SERVING_POLL_INTERVAL_S="0.3")

    def move(self, change, action: str) -> None:
        rollout.move(self.settings, self.client, ROLLOUT_MODEL, change, action, "test", action)

    def wait_for(self, stage: str | None, share: float = 0.0) -> None:
        """Until the service follows the registry's rollout (None: no rollout)."""
        deadline = time.monotonic() + 60
        while True:
            models = httpx.get(f"{self.server.url}/v1/models").json()["models"]
            seen = next(m for m in models if m["name"] == ROLLOUT_MODEL)["rollout"]
            if (seen is None and stage is None) or (
                seen and (seen["stage"], seen["share"]) == (stage, share) and seen["loaded"]
            ):
                return
            assert time.monotonic() < deadline, seen
            time.sleep(0.2)

    def price(self, batch: list[dict]) -> list[tuple[str, list[dict]]]:
        """(request id, predictions) per request of ``REQUEST_LISTINGS``; every one a 200."""
        answers = []
        for start in range(0, len(batch), REQUEST_LISTINGS):
            body = {"listings": batch[start : start + REQUEST_LISTINGS]}
            response = httpx.post(f"{self.server.url}/v1/price/predict", json=body, timeout=60)
            assert response.status_code == 200, response.text
            answer = response.json()
            assert response.headers["X-Model-Arm"] == answer["model"]["arm"]
            answers.append((answer["request_id"], answer["predictions"]))
        return answers

    def logged(self, request_ids: list[str], rows: int) -> list[tuple]:
        """(request_id, item, role, model_version, prediction) of the requests, once all
        ``rows`` are written."""
        deadline = time.monotonic() + 60
        with psycopg.connect(self.settings.database_url("raw_data"), autocommit=True) as conn:
            while True:
                found = conn.execute(
                    "SELECT request_id, item, role, model_version, prediction FROM inference_log "
                    "WHERE request_id = ANY(%s)",
                    (request_ids,),
                ).fetchall()
                if len(found) >= rows or time.monotonic() > deadline:
                    return found
                time.sleep(0.3)


@pytest.fixture(scope="module")
def staged(production_models):
    staged = Rollout(production_models)
    with staged.server:
        yield staged


def test_shadow_scores_every_listing_unseen_and_pairs_with_production(staged: Rollout) -> None:
    staged.move(partial(rollout.started, version=staged.challenger), "start")
    staged.wait_for("shadow")
    batch = listings()[:2_000]

    answers = staged.price(batch)

    assert {p["version"] for _, ps in answers for p in ps} == {staged.champion}
    request_ids = [request_id for request_id, _ in answers]
    rows = staged.logged(request_ids, 2 * len(batch))
    by_role = {
        role: {(r, i) for r, i, rl, _, _ in rows if rl == role} for role in ("production", "shadow")
    }
    assert len(by_role["production"]) == len(by_role["shadow"]) == len(batch)
    assert by_role["production"] == by_role["shadow"]  # 1:1, joined on request id and item
    assert {v for _, _, role, v, _ in rows if role == "shadow"} == {staged.challenger}


def test_the_canary_answers_its_share_and_the_same_listings_every_time(staged: Rollout) -> None:
    staged.move(partial(rollout.stepped, share=0.05), "step")
    staged.wait_for("canary", 0.05)
    batch = listings()

    first = [p["arm"] for _, ps in staged.price(batch) for p in ps]
    again = staged.price(batch)

    share = first.count("canary") / len(first)
    assert 0.043 <= share <= 0.057, share  # 5% ± 0.7%
    assert [p["arm"] for _, ps in again for p in ps] == first
    canary = {p["version"] for _, ps in again for p in ps if p["arm"] == "canary"}
    assert canary == {staged.challenger}
    # Production scores the canary's listings unseen: every canary price has a partner.
    request_ids = [request_id for request_id, _ in again]
    answered = len(batch) + first.count("canary")
    rows = staged.logged(request_ids, answered)
    canary_keys = {(r, i) for r, i, role, _, _ in rows if role == "canary"}
    shadow_keys = {(r, i) for r, i, role, v, _ in rows if role == "shadow" and v == staged.champion}
    assert canary_keys == shadow_keys and len(canary_keys) == first.count("canary")
    view = httpx.get(f"{staged.server.url}/v1/rollout").json()
    assert (
        view["summary"]
        == f"production v{staged.champion}, challenger v{staged.challenger} in canary 5%"
    )
    assert view["figures"]["challenger_rows"] == 2 * first.count("canary")
    assert view["figures"]["divergence"] == 0.0 and view["guardrails"] == []  # twins agree
    assert [e["action"] for e in view["events"][:2]] == ["step", "start"]
    # Explained by the version that prices it: the canary for a listing routed there.
    routed = {arm: batch[first.index(arm)] for arm in ("canary", "production")}
    for arm, listing in routed.items():
        explained = httpx.post(f"{staged.server.url}/v1/price/explain", json={"listing": listing})
        version = staged.challenger if arm == "canary" else staged.champion
        assert explained.json()["model"] == {"name": ROLLOUT_MODEL, "version": version, "arm": arm}


def test_a_rollback_sends_everything_back_to_production(staged: Rollout) -> None:
    staged.move(rollout.aborted, "rollback")
    staged.wait_for(None)
    arms = {(p["arm"], p["version"]) for _, ps in staged.price(listings()[:1_000]) for p in ps}
    assert arms == {("production", staged.champion)}


def test_a_challenger_that_doubles_every_price_is_rolled_back_on_canary(
    staged: Rollout, production_models
) -> None:
    """Trained on doubled prices: its canary answers diverge by log 2 from production's on the
    same listings; the controller's next tick after enough listings rolls it back, and no
    client request fails on the way."""
    doubled = production_models.listings.assign(price=production_models.listings["price"] * 2)
    bad = register_price_model(staged.settings, doubled, promote=False)
    staged.move(partial(rollout.started, version=bad), "start")
    staged.move(partial(rollout.stepped, share=0.05), "step")
    staged.wait_for("canary", 0.05)

    ticks = []
    while rollout.read_state(staged.client, ROLLOUT_MODEL).challenger is not None:
        assert len(ticks) < 30, ticks
        staged.price(listings()[len(ticks) * 1_000 :][:1_000])  # every answer a 200
        ticks.append(guardrails.control(staged.settings, staged.client, datetime.now(UTC)))

    [event, *_] = rollout.events(staged.settings, ROLLOUT_MODEL)
    assert (event["action"], event["actor"]) == ("rollback", "controller"), ticks
    assert "divergence" in event["reason"]
    assert event["metrics"]["divergence"] > 0.5  # about log 2
    staged.wait_for(None)
    arms = {(p["arm"], p["version"]) for _, ps in staged.price(listings()[:1_000]) for p in ps}
    assert arms == {("production", staged.champion)}


def test_digits_roll_out_too_shadow_pairs_and_canary_by_request(staged: Rollout) -> None:
    """The classifier in the same mechanism: the challenger reads every image unseen in shadow,
    answers its share of requests on canary, and the controller judges it by agreement."""
    challenger = staged.digits[1]
    eight = base64.b64encode(json.dumps(load_digits().images[8].tolist()).encode()).decode()

    def read(count: int) -> list[dict]:
        answers = []
        for i in range(count):
            body = {"request_id": f"d{i}", "image": eight}
            response = httpx.post(f"{staged.server.url}/v1/digits/predict", json=body)
            assert response.status_code == 200, response.text
            answers.append(response.json())
        return answers

    def logged_roles(since: datetime) -> list[tuple]:
        time.sleep(2.0)  # the writer's flush interval
        with psycopg.connect(staged.settings.database_url("raw_data")) as conn:
            return conn.execute(
                "SELECT role, model_version, details->>'prediction' FROM inference_log "
                "WHERE model_name = %s AND logged_at >= %s",
                (ROLLOUT_DIGITS, since),
            ).fetchall()

    digits_move = partial(rollout.move, staged.settings, staged.client, ROLLOUT_DIGITS)
    digits_move(partial(rollout.started, version=challenger), "start", "test", "shadow")
    since = datetime.now(UTC)
    deadline = time.monotonic() + 60
    while not _challenger_loaded(staged, ROLLOUT_DIGITS):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    shadowed = read(20)
    assert {a["prediction"] for a in shadowed} == {8}
    assert {a["model"]["arm"] for a in shadowed} == {"production"}
    rows = logged_roles(since)
    assert sorted(r[:2] for r in rows if r[0] == "shadow") == [("shadow", challenger)] * 20
    assert {r[2] for r in rows} == {"8"}  # both arms read the eight

    digits_move(partial(rollout.stepped, share=0.5), "step", "test", "canary")
    deadline = time.monotonic() + 60
    while (arms := {a["model"]["arm"] for a in read(10)}) != {"production", "canary"}:
        assert time.monotonic() < deadline, arms  # half the requests, by request id
    state = rollout.read_state(staged.client, ROLLOUT_DIGITS)
    deadline = time.monotonic() + 30
    # The inference log writer flushes every second or so: the canary's rows come after it.
    while (live := guardrails.figures(staged.settings, ROLLOUT_DIGITS, state)).agreement is None:
        assert time.monotonic() < deadline, live
        time.sleep(0.5)
    assert live.agreement == 1.0 and live.divergence is None and live.challenger_rows > 0
    digits_move(rollout.aborted, "rollback", "test", "done")


def _challenger_loaded(staged: Rollout, name: str) -> bool:
    models = httpx.get(f"{staged.server.url}/v1/models").json()["models"]
    rollout_seen = next(m for m in models if m["name"] == name)["rollout"]
    return bool(rollout_seen and rollout_seen["loaded"])
