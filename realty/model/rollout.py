"""Rollout: the aliases ``production``, ``previous`` and ``challenger`` and the rollout's stage,
moved only here, one move at a time, each move one audited row of ``rollout_events``.

The state lives in the registry, where serving already looks: the three aliases, and the tag
``rollout.step`` on the registered model (JSON: stage, canary share, when the step began,
paused; one tag so that one write changes them together). A move, under the model's
PostgreSQL advisory lock (session-level: a crashed mover's lock goes with its connection):

1. completes a move that a crash interrupted (its row has ``applied_at`` null);
2. reads the state and computes the target from it (so concurrent movers never race);
3. writes its row, before and after, and commits it before MLflow is touched;
4. writes to MLflow: aliases that change are deleted first, ``production`` is set next, the
   others after. So no two aliases ever point at one version midway (``previous ==
   production`` cannot happen), and ``production`` is never absent once it was set;
5. marks its row applied.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import psycopg
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from realty.model.registry import CHALLENGER, PREVIOUS, PRODUCTION
from realty.settings import Settings
from realty.store.db import connect

ALIASES = (PRODUCTION, PREVIOUS, CHALLENGER)

# One tag, one write: a reader never sees a new stage with the old share.
STEP_TAG = "rollout.step"
STEP_FIELDS = ("stage", "share", "step_started_at", "paused")

NONE, SHADOW, CANARY = "none", "shadow", "canary"
LOCK_CLASS = 4243  # pg_advisory_lock(class, hashtext(model)); 4242 is the migrations' lock

log = logging.getLogger(__name__)


class RolloutError(RuntimeError):
    """A move that makes no sense in the current state (nothing was written)."""


@dataclass(frozen=True)
class RolloutState:
    production: str | None = None
    previous: str | None = None
    challenger: str | None = None
    stage: str = NONE  # none | shadow | canary
    share: float = 0.0  # the canary's share of traffic (0 in shadow)
    step_started_at: str | None = None  # ISO UTC
    paused: bool = False

    def aliases(self) -> dict[str, str | None]:
        return {PRODUCTION: self.production, PREVIOUS: self.previous, CHALLENGER: self.challenger}

    def tags(self) -> dict[str, str]:
        return {STEP_TAG: json.dumps({field: getattr(self, field) for field in STEP_FIELDS})}

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def step_age_s(self, now: datetime) -> float:
        if self.step_started_at is None:
            return 0.0
        return (now - datetime.fromisoformat(self.step_started_at)).total_seconds()

    def describe(self) -> str:
        if self.challenger is None:
            return f"production v{self.production}, no rollout"
        where = "shadow" if self.stage == SHADOW else f"canary {self.share:.0%}"
        paused = ", paused" if self.paused else ""
        return f"production v{self.production}, challenger v{self.challenger} in {where}{paused}"


@dataclass(frozen=True)
class RolloutEvent:
    event_id: int
    action: str
    actor: str
    reason: str
    before: RolloutState
    after: RolloutState


def read_state(client: MlflowClient, name: str) -> RolloutState:
    """The registry's rollout state of ``name`` (the empty state if the model does not exist)."""
    try:
        model = client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return RolloutState()
        raise
    aliases, tags = dict(model.aliases or {}), dict(model.tags or {})
    step = json.loads(tags[STEP_TAG]) if STEP_TAG in tags else {}
    return RolloutState(
        production=aliases.get(PRODUCTION),
        previous=aliases.get(PREVIOUS),
        challenger=aliases.get(CHALLENGER),
        **{field: step[field] for field in STEP_FIELDS if field in step},
    )


def _now() -> str:
    return datetime.now(UTC).isoformat()


# The moves, as functions of the current state. Each raises RolloutError when it makes no sense.


def started(state: RolloutState, version: str) -> RolloutState:
    """``version`` becomes the challenger, in shadow (it replaces a challenger in rollout)."""
    if version == state.production:
        raise RolloutError(f"v{version} is production already")
    return replace(state, challenger=version, stage=SHADOW, share=0.0, step_started_at=_now())


def stepped(state: RolloutState, share: float) -> RolloutState:
    _need_challenger(state)
    return replace(state, stage=CANARY, share=share, step_started_at=_now())


def promoted(state: RolloutState, version: str | None = None) -> RolloutState:
    """``version`` (default: the challenger) becomes production, the former production
    previous; the rollout ends."""
    version = version or _need_challenger(state)
    if version == state.production:
        raise RolloutError(f"v{version} is production already")
    return RolloutState(production=version, previous=state.production or state.previous)


def aborted(state: RolloutState) -> RolloutState:
    """The challenger leaves the rollout; production stays."""
    _need_challenger(state)
    return replace(state, challenger=None, stage=NONE, share=0.0, step_started_at=None)


def swapped(state: RolloutState) -> RolloutState:
    """``production`` and ``previous`` trade places (a second swap undoes the first)."""
    if state.production is None or state.previous is None:
        missing = PRODUCTION if state.production is None else PREVIOUS
        raise RolloutError(f"there is no {missing} version to roll back from")
    return replace(state, production=state.previous, previous=state.production)


def paused(state: RolloutState, pause: bool) -> RolloutState:
    _need_challenger(state)
    return replace(state, paused=pause)


def _need_challenger(state: RolloutState) -> str:
    if state.challenger is None:
        raise RolloutError("no challenger is in rollout")
    return state.challenger


def rolled_back(state: RolloutState) -> RolloutState:
    """What a person's rollback means: the challenger out if there is one, else production
    back to previous."""
    return aborted(state) if state.challenger is not None else swapped(state)


# What a person may do (the CLI's `realty rollout ...` and the Dagster job `rollout_job`).
MANUAL_MOVES: dict[str, Callable[[RolloutState], RolloutState]] = {
    "promote": promoted,
    "rollback": rolled_back,
    "pause": partial(paused, pause=True),
    "resume": partial(paused, pause=False),
}


# Moving.

Write = Callable[[str], None]  # called after each MLflow write with what it did (fault tests)


def move(
    settings: Settings,
    client: MlflowClient,
    name: str,
    change: Callable[[RolloutState], RolloutState],
    action: str,
    actor: str,
    reason: str,
    metrics: dict[str, Any] | None = None,
    on_write: Write | None = None,
) -> RolloutEvent:
    """Apply ``change`` to ``name``'s state as one audited move (see the module docstring)."""
    with _locked(settings, name) as conn:
        complete_interrupted(conn, client, name, on_write)
        before = read_state(client, name)
        after = change(before)
        event_id = conn.execute(
            "INSERT INTO rollout_events (model_name, action, actor, reason, before, after, "
            "metrics) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING event_id",
            (name, action, actor, reason, Jsonb(before.as_json()), Jsonb(after.as_json()),
             Jsonb(metrics) if metrics is not None else None),
        ).fetchone()[0]  # fmt: skip
        _write(client, name, before, after, on_write)
        _mark_applied(conn, event_id)
    log.info("%s %s by %s: %s (%s)", name, action, actor, after.describe(), reason)
    return RolloutEvent(event_id, action, actor, reason, before, after)


def promote(
    settings: Settings, client: MlflowClient, name: str, version: str, actor: str, reason: str
) -> RolloutEvent:
    """``version`` becomes production at once (a direct rollout, the first model, digits)."""
    change = partial(promoted, version=version)
    return move(settings, client, name, change, "promote", actor, reason)


def release(
    settings: Settings, client: MlflowClient, name: str, version: str, actor: str, reason: str
) -> RolloutEvent:
    """A new version that earned its place: production at once with ``REALTY_ROLLOUT=direct``
    or when ``name`` has no production yet, else the challenger, in shadow, for the controller
    to roll out."""
    if settings.rollout == "staged" and read_state(client, name).production is not None:
        change = partial(started, version=version)
        return move(settings, client, name, change, "start", actor, reason)
    return promote(settings, client, name, version, actor, reason)


def recover(settings: Settings, client: MlflowClient, name: str) -> int | None:
    """Complete a move a crash interrupted, if any; return its event id."""
    with _locked(settings, name) as conn:
        return complete_interrupted(conn, client, name)


def complete_interrupted(
    conn: psycopg.Connection, client: MlflowClient, name: str, on_write: Write | None = None
) -> int | None:
    row = conn.execute(
        "SELECT event_id, after FROM rollout_events WHERE model_name = %s AND applied_at IS NULL "
        "ORDER BY event_id DESC LIMIT 1",
        (name,),
    ).fetchone()
    if row is None:
        return None
    event_id, after = row
    _write(client, name, read_state(client, name), RolloutState(**after), on_write)
    _mark_applied(conn, event_id)
    log.warning("%s: completed rollout event %d, which a crash had interrupted", name, event_id)
    return event_id


@contextmanager
def _locked(settings: Settings, name: str) -> Iterator[psycopg.Connection]:
    with connect("clean_data", settings, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (LOCK_CLASS, name))
        try:
            yield conn
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (LOCK_CLASS, name))


def _mark_applied(conn: psycopg.Connection, event_id: int) -> None:
    conn.execute("UPDATE rollout_events SET applied_at = now() WHERE event_id = %s", (event_id,))


def _write(
    client: MlflowClient,
    name: str,
    before: RolloutState,
    after: RolloutState,
    on_write: Write | None,
) -> None:
    for description, write in _writes(client, name, before, after):
        write()
        if on_write is not None:
            on_write(description)


def _writes(
    client: MlflowClient, name: str, before: RolloutState, after: RolloutState
) -> list[tuple[str, Callable[[], None]]]:
    """The MLflow writes from ``before`` to ``after``, in the order of the module docstring:
    changing aliases other than production deleted, production set, the others set, tags."""
    old, new = before.aliases(), after.aliases()
    changed = [alias for alias in ALIASES if old[alias] != new[alias]]
    writes = [
        (f"delete {alias}", _deleter(client, name, alias))
        for alias in changed
        if old[alias] is not None and (alias != PRODUCTION or new[alias] is None)
    ]
    for alias in changed:  # ALIASES order: production first
        if (version := new[alias]) is not None:
            set_alias = partial(client.set_registered_model_alias, name, alias, version)
            writes.append((f"{alias} = v{version}", set_alias))
    old_tags = before.tags()
    for key, value in after.tags().items():
        if old_tags[key] != value:
            writes.append(
                (f"{key} = {value}", partial(client.set_registered_model_tag, name, key, value))
            )
    return writes


def _deleter(client: MlflowClient, name: str, alias: str) -> Callable[[], None]:
    def delete() -> None:
        try:
            client.delete_registered_model_alias(name, alias)
        except MlflowException as error:  # already gone: a completed write being redone
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise

    return delete


# Reading the record.


def events(settings: Settings, name: str, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` moves of ``name``, newest first."""
    with (
        connect("clean_data", settings) as conn,
        conn.cursor(row_factory=dict_row) as cur,
    ):
        return cur.execute(
            "SELECT event_id, decided_at, applied_at, action, actor, reason, before, after, "
            "metrics FROM rollout_events WHERE model_name = %s ORDER BY event_id DESC LIMIT %s",
            (name, limit),
        ).fetchall()


def state_at(settings: Settings, name: str, at: datetime) -> RolloutState | None:
    """Which versions served at ``at``: the state after the last move applied by then (None
    before the first recorded move)."""
    with connect("clean_data", settings) as conn:
        row = conn.execute(
            "SELECT after FROM rollout_events WHERE model_name = %s AND applied_at <= %s "
            "ORDER BY applied_at DESC, event_id DESC LIMIT 1",
            (name, at),
        ).fetchone()
    return RolloutState(**row[0]) if row else None
