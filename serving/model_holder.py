"""The models the service answers with, reloaded from the registry without a restart.

A ``ModelSlot`` holds one registered model's ``production`` version, and during a rollout its
``challenger`` beside it (``RolloutArm``: shadow or canary, realty.model.rollout). ``reload``
(run off the request path: by the poller thread or the admin route) asks the registry which
version each alias points at; when it is another version than the one loaded, it loads it,
runs a smoke prediction and only then swaps it in, by replacing one reference. A request reads that
reference once and uses the object it got until it has answered, so requests in flight finish
on the old version and no request sees a half-loaded model. A version that fails to load or its
smoke prediction is not swapped in; it is remembered (``/v1/models``, ``/health``) and the
poller retries it with backoff (``RetrySchedule``: its failure may have been MLflow going away
mid-download); the admin route retries it at once. When the registry cannot be reached the
loaded version keeps serving and the slot reports ``registry_error``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient

from realty.model.intervals import DEFAULT_LEVEL
from realty.model.registry import CHALLENGER, PRODUCTION
from realty.model.rollout import CANARY, SHADOW, RolloutState, read_state

log = logging.getLogger(__name__)

# A listing every price model must price (finite, positive) and price the same way on the fast
# path and through ``PriceModel.predict`` before it serves traffic.
SMOKE_LISTINGS = (
    {
        "brokered_by": 22611.0,
        "status": "for_sale",
        "bed": 3.0,
        "bath": 2.0,
        "acre_lot": 0.25,
        "street": 1.0,
        "city": "Boston",
        "state": "Massachusetts",
        "zip_code": "02134",
        "house_size": 1500.0,
        "prev_sold_date": "2015-06-01",
    },
    {"status": "sold", "city": None, "state": None},
)


RETRY_FIRST_DELAY_S = 5.0  # after a version's first failed load; doubled per failure
RETRY_MAX_DELAY_S = 300.0


@dataclass
class RetrySchedule:
    """When the poller may try a version whose load failed again (monotonic seconds)."""

    delay_s: float = RETRY_FIRST_DELAY_S
    next_at: float = 0.0

    def failed(self, now: float) -> None:
        self.next_at = now + self.delay_s
        self.delay_s = min(self.delay_s * 2, RETRY_MAX_DELAY_S)

    def due(self, now: float) -> bool:
        return now >= self.next_at


class SmokeTestError(RuntimeError):
    """A loaded version answered its smoke prediction wrongly."""


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    alias: str
    loaded_at: datetime
    run_id: str | None
    model: Any

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "loaded_at": self.loaded_at,
            "run_id": self.run_id,
        }


@dataclass(frozen=True)
class ReloadAttempt:
    at: datetime
    outcome: str  # loaded | unchanged | failed | skipped | no production version | registry error
    version: str | None
    message: str

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RolloutArm:
    """The challenger in rollout, loaded and smoke-tested, and how it takes traffic: in
    ``shadow`` it scores every listing unseen; in ``canary`` it answers ``share`` of them."""

    challenger: LoadedModel
    stage: str  # shadow | canary
    share: float  # of the listings, in canary


def load_price_model(name: str, version: str) -> Any:
    """The fitted ``PriceModel`` (realty.model.price_model) of a version, out of its pyfunc
    wrapper."""
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model()


def smoke_price_model(model: Any) -> None:
    """Also builds the fast path's look-up tables, before the version serves a request."""
    import pandas as pd

    fast = model.predict_rows(SMOKE_LISTINGS)
    slow = model.predict(None, pd.DataFrame(list(SMOKE_LISTINGS)))
    if not (np.all(np.isfinite(fast)) and np.all(fast > 0)):
        raise SmokeTestError(f"the smoke listings were priced {fast.tolist()}")
    if not np.allclose(fast, slow, rtol=1e-9, atol=0):
        raise SmokeTestError(f"fast path {fast.tolist()} differs from pyfunc {slow.tolist()}")
    priced = model.price_rows(SMOKE_LISTINGS, DEFAULT_LEVEL)
    if priced.low is not None and not np.all((priced.low <= fast) & (fast <= priced.high)):
        raise SmokeTestError(
            f"the intervals {priced.low.tolist()} to {priced.high.tolist()} miss {fast.tolist()}"
        )


def load_digits_model(name: str, version: str) -> Any:
    return mlflow.sklearn.load_model(f"models:/{name}/{version}")


def smoke_digits_model(model: Any) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    predicted = model.predict(digits.data[:20])
    if (predicted == digits.target[:20]).mean() < 0.9:
        raise SmokeTestError(f"digits model got {predicted.tolist()} for {digits.target[:20]}")


class ModelSlot:
    """The loaded ``production`` version of one registered model, and how reloading went."""

    def __init__(
        self,
        name: str,
        load: Callable[[str, str], Any],
        smoke: Callable[[Any], None],
    ) -> None:
        self.name = name
        self._load = load
        self._smoke = smoke
        self.current: LoadedModel | None = None  # replaced, never mutated: the atomic swap
        self.rollout_arm: RolloutArm | None = None  # likewise
        self.rollout_state = RolloutState()  # as the registry said last
        self.challenger_attempt: ReloadAttempt | None = None
        self.last_attempt: ReloadAttempt | None = None
        self.last_failure: ReloadAttempt | None = None
        self.registry_error: str | None = None
        self.reloads = {"loaded": 0, "failed": 0}
        self._failed_versions: dict[str, RetrySchedule] = {}
        self._reloading = threading.Lock()  # one reload of a slot at a time

    def reload(self, client: MlflowClient, retry_failed: bool = False) -> ReloadAttempt:
        """Load the aliases' versions that are new (see the module docstring); the attempt
        returned is production's."""
        with self._reloading:
            attempt = self._reload(client, retry_failed)
        self.last_attempt = attempt
        for tried in (attempt, self.challenger_attempt):
            if tried is not None and tried.outcome == "failed":
                self.last_failure = tried
        return attempt

    def _reload(self, client: MlflowClient, retry_failed: bool) -> ReloadAttempt:
        try:
            state = read_state(client, self.name)
        except Exception as error:  # the registry is down, slow or answering garbage
            self.registry_error = f"{type(error).__name__}: {error}"[:500]
            log.warning("%s: registry unreachable: %s", self.name, self.registry_error)
            return self._attempt("registry error", None, self.registry_error)
        self.registry_error = None
        self.rollout_state = state
        self._follow_challenger(client, state, retry_failed)
        if state.production is None:
            return self._attempt("no production version", None, "no version has the alias")
        before = self.current
        self.current, attempt = self._loaded(
            client, PRODUCTION, state.production, self.current, retry_failed
        )
        if self.current is not before:
            log.info("%s: now serving v%s (was %s)", self.name, state.production,
                     before and before.version)  # fmt: skip
        return attempt

    def _follow_challenger(self, client: MlflowClient, state: RolloutState, retry: bool) -> None:
        """Keep the challenger of a rollout loaded beside production, so that a step or a
        rollback never waits for a load; drop it when the rollout ends."""
        if state.challenger is None or state.stage not in (SHADOW, CANARY):
            self.rollout_arm, self.challenger_attempt = None, None
            return
        loaded = self.rollout_arm.challenger if self.rollout_arm else None
        loaded, self.challenger_attempt = self._loaded(
            client, CHALLENGER, state.challenger, loaded, retry
        )
        self.rollout_arm = loaded and RolloutArm(loaded, state.stage, state.share)

    def _loaded(
        self,
        client: MlflowClient,
        alias: str,
        version: str,
        loaded: LoadedModel | None,
        retry_failed: bool,
    ) -> tuple[LoadedModel | None, ReloadAttempt]:
        """``version`` loaded and smoke-tested (``loaded`` itself when it is that version);
        on a failure, ``loaded`` stays and the version is retried with backoff."""
        if loaded is not None and loaded.version == version:
            return loaded, self._attempt("unchanged", version, f"v{version} is loaded")
        retry = self._failed_versions.get(version)
        if retry is not None and not retry_failed and not retry.due(time.monotonic()):
            wait_s = retry.next_at - time.monotonic()
            message = f"v{version} failed before; next retry in {wait_s:.0f} s"
            return loaded, self._attempt("skipped", version, message)
        try:
            model = self._load(self.name, version)
            self._smoke(model)
            run_id = client.get_model_version(self.name, version).run_id
        except Exception as error:
            self._failed_versions.setdefault(version, RetrySchedule()).failed(time.monotonic())
            self.reloads["failed"] += 1
            message = f"{alias} v{version} not swapped in: {type(error).__name__}: {error}"[:1000]
            log.error("%s: %s", self.name, message)
            return loaded, self._attempt("failed", version, message)
        self._failed_versions.pop(version, None)
        self.reloads["loaded"] += 1
        was = loaded.version if loaded else None
        new = LoadedModel(self.name, version, alias, datetime.now(UTC), run_id, model)
        return new, self._attempt("loaded", version, f"{alias} v{version} loaded (was {was})")

    @staticmethod
    def _attempt(outcome: str, version: str | None, message: str) -> ReloadAttempt:
        return ReloadAttempt(datetime.now(UTC), outcome, version, message)

    def status(self) -> dict[str, Any]:
        """``ok`` serving its alias's version; else ``degraded`` / ``unavailable`` + reason."""
        if self.current is None:
            reason = self.last_attempt.message if self.last_attempt else "not loaded yet"
            return {"status": "unavailable", "version": None, "reason": reason}
        problems = []
        if self.registry_error:
            problems.append(f"registry unreachable ({self.registry_error}); serving the loaded")
        if self.last_attempt and self.last_attempt.outcome in ("failed", "skipped"):
            problems.append(self.last_attempt.message)
        return {
            "status": "degraded" if problems else "ok",
            "version": self.current.version,
            "reason": "; ".join(problems) or None,
            "rollout": self.rollout(),
        }

    def rollout(self) -> dict[str, Any] | None:
        """The registry's rollout and what this process does with it (None: no rollout)."""
        state, arm = self.rollout_state, self.rollout_arm
        if state.challenger is None:
            return None
        attempt = self.challenger_attempt
        return {
            "challenger": state.challenger,
            "stage": state.stage,
            "share": state.share,
            "paused": state.paused,
            "step_started_at": state.step_started_at,
            "loaded": arm is not None and arm.challenger.version == state.challenger,
            "last_attempt": attempt.describe() if attempt else None,
        }


class ModelHolder:
    """Every slot the service serves, and the poller that keeps them on their aliases."""

    def __init__(self, tracking_uri: str, slots: list[ModelSlot], poll_interval_s: float):
        self.tracking_uri = tracking_uri
        self.slots = {slot.name: slot for slot in slots}
        self.poll_interval_s = poll_interval_s
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri, self.tracking_uri)

    def reload_all(self, retry_failed: bool = False) -> dict[str, ReloadAttempt]:
        client = self.client()
        return {name: slot.reload(client, retry_failed) for name, slot in self.slots.items()}

    def start(self) -> None:
        """Load what the aliases point at now, then poll them in a daemon thread."""
        self.reload_all()
        self._poller = threading.Thread(target=self._poll, name="model-poller", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.reload_all()
            except Exception:  # never let the poller die: the next tick tries again
                log.exception("polling the model aliases failed")

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=30)
