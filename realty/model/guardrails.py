"""The rollout controller's judgement: the live figures of each arm since the step began, read
from ``raw_data.inference_log``, and the move they call for; for the price model and the
digits classifier alike.

Figures (price route, this step's window): the challenger's scored listings (as canary or in
shadow), its error rate (listings it failed to price), the p99 latency of the answered
listings per arm, and the divergence: the median |log(challenger / production)| over the
listings both priced, joined on request id and item (serving makes those pairs: production's
answer and the challenger's shadow, or the canary's answer and production's shadow). For the
digits classifier the divergence is replaced by the agreement: the share of images both read
as the same digit.

Where sales have come back for listings both arms priced (``clean_data.price_labels``, the late
labels of the realized_performance asset), the realized error: the challenger's and
production's MAE (log price) against the sold prices, on the same requests, over the whole
rollout (a challenger answers only while it rolls out). It is judged once there are
``rollout_min_labels`` such sales, whatever the step's traffic.

A guardrail is judged once the challenger has ``rollout_min_requests`` listings; one that fails
rolls it back at once, whatever the bake time. A step ends when its time is up with the
guardrails holding: shadow → the first canary share → … → production. Paused: no step is taken,
but a failing guardrail still rolls back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from functools import partial

from realty.model import rollout
from realty.model.rollout import CANARY, SHADOW, RolloutState
from realty.settings import Settings
from realty.store.db import connect

PRICE_ROUTE = "/v1/price/predict"

FIGURES = """
WITH step AS (
    SELECT request_id, item, role, model_version, latency_ms, prediction FROM inference_log
    WHERE model_name = %(name)s AND route = %(route)s AND logged_at >= %(since)s
),
challenger AS (SELECT * FROM step WHERE model_version = %(challenger)s),
production AS (SELECT * FROM step WHERE model_version = %(production)s)
SELECT
    (SELECT count(*) FROM challenger),
    (SELECT count(*) FROM challenger WHERE prediction IS NULL),
    (SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) FROM challenger
     WHERE role = 'canary'),
    (SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) FROM production
     WHERE role = 'production'),
    (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(ln(c.prediction / p.prediction)))
     FROM challenger c JOIN production p USING (request_id, item)
     WHERE c.prediction > 0 AND p.prediction > 0),
    (SELECT count(*) FROM production WHERE role = 'production'),
    NULL
"""

# The digits classifier's: an error is a row with details.error, and instead of a divergence of
# prices, the agreement of the two classes read from the same image.
DIGITS_FIGURES = """
WITH step AS (
    SELECT request_id, item, role, model_version, latency_ms, details FROM inference_log
    WHERE model_name = %(name)s AND logged_at >= %(since)s
),
challenger AS (SELECT * FROM step WHERE model_version = %(challenger)s),
production AS (SELECT * FROM step WHERE model_version = %(production)s)
SELECT
    (SELECT count(*) FROM challenger),
    (SELECT count(*) FROM challenger WHERE details ? 'error'),
    (SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) FROM challenger
     WHERE role = 'canary'),
    (SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) FROM production
     WHERE role = 'production'),
    NULL,
    (SELECT count(*) FROM production WHERE role = 'production'),
    (SELECT avg((c.details->>'prediction' = p.details->>'prediction')::int)
     FROM challenger c JOIN production p USING (request_id, item)
     WHERE c.details ? 'prediction' AND p.details ? 'prediction')
"""


# Sales only: a relisting's new asking price is not what the listing was worth.
REALIZED = """
SELECT count(*),
       avg(abs(ln(c.prediction / c.realized_price))),
       avg(abs(ln(p.prediction / p.realized_price)))
FROM price_labels c JOIN price_labels p USING (request_id, item)
WHERE c.model_name = %(name)s AND c.model_version = %(challenger)s
  AND p.model_name = %(name)s AND p.model_version = %(production)s
  AND c.label_kind = 'sale' AND p.label_kind = 'sale'
  AND c.prediction > 0 AND p.prediction > 0 AND c.realized_price > 0
"""


@dataclass(frozen=True)
class ArmFigures:
    challenger_rows: int
    challenger_errors: int
    canary_p99_ms: float | None
    production_p99_ms: float | None
    divergence: float | None  # prices: median |log ratio| on shared listings
    production_rows: int
    agreement: float | None = None  # digits: share of shared images read alike
    labelled_sales: int = 0  # prices: sold listings both arms priced (the whole rollout)
    challenger_realized_mae: float | None = None  # MAE (log price) against the sold prices
    production_realized_mae: float | None = None

    @property
    def error_rate(self) -> float:
        return self.challenger_errors / self.challenger_rows if self.challenger_rows else 0.0

    def as_json(self) -> dict[str, float | int | None]:
        return {**asdict(self), "error_rate": self.error_rate}


@dataclass(frozen=True)
class Decision:
    action: str  # step | promote | rollback
    change: Callable[[RolloutState], RolloutState]
    reason: str


def figures(settings: Settings, name: str, state: RolloutState) -> ArmFigures:
    """The live figures of ``state``'s step of model ``name`` (the step has a challenger)."""
    arms = {"name": name, "challenger": state.challenger, "production": state.production}
    query = DIGITS_FIGURES if name == settings.digits_model_name else FIGURES
    step = {**arms, "route": PRICE_ROUTE, "since": datetime.fromisoformat(state.step_started_at)}
    with connect("raw_data", settings) as conn:
        live = ArmFigures(*conn.execute(query, step).fetchone())
    if name != settings.price_model_name:
        return live
    with connect("clean_data", settings) as conn:
        sales, challenger, production = conn.execute(REALIZED, arms).fetchone()
    return replace(
        live,
        labelled_sales=sales,
        challenger_realized_mae=challenger,
        production_realized_mae=production,
    )


def failed_guardrails(figures: ArmFigures, settings: Settings) -> list[str]:
    """What is wrong with the challenger (empty: nothing, or too few listings to say)."""
    failures = _realized_failures(figures, settings)
    if figures.challenger_rows < settings.rollout_min_requests:
        return failures
    if figures.error_rate > settings.rollout_max_error_rate:
        failures.append(
            f"error rate {figures.error_rate:.1%} > {settings.rollout_max_error_rate:.1%}"
        )
    if figures.canary_p99_ms is not None and figures.canary_p99_ms > settings.rollout_max_p99_ms:
        failures.append(
            f"canary p99 {figures.canary_p99_ms:.0f} ms > {settings.rollout_max_p99_ms:.0f} ms"
        )
    if figures.agreement is not None and figures.agreement < settings.rollout_min_agreement:
        failures.append(
            f"agreement {figures.agreement:.1%} < {settings.rollout_min_agreement:.1%} "
            "(the same images read alike by both)"
        )
    if figures.divergence is not None and figures.divergence > settings.rollout_max_divergence:
        failures.append(
            f"divergence {figures.divergence:.3f} > {settings.rollout_max_divergence:.3f} "
            "(median |log(challenger / production)|)"
        )
    return failures


def _realized_failures(figures: ArmFigures, settings: Settings) -> list[str]:
    if figures.labelled_sales < settings.rollout_min_labels:
        return []
    challenger, production = figures.challenger_realized_mae, figures.production_realized_mae
    allowed = production * (1 + settings.rollout_max_realized_increase)
    if challenger <= allowed:
        return []
    return [
        f"realized MAE (log) {challenger:.3f} > production's {production:.3f} "
        f"+{settings.rollout_max_realized_increase:.0%} on {figures.labelled_sales} sold listings"
    ]


def decide(
    state: RolloutState, figures: ArmFigures, settings: Settings, now: datetime
) -> Decision | None:
    """The controller's move for ``state`` given its step's ``figures`` (None: hold)."""
    failures = failed_guardrails(figures, settings)
    if failures:
        return Decision("rollback", rollout.aborted, "guardrail failed: " + "; ".join(failures))
    if state.paused or figures.challenger_rows < settings.rollout_min_requests:
        return None
    age = state.step_age_s(now)
    held = f"held {age:.0f} s over {figures.challenger_rows} listings, guardrails pass"
    steps = settings.rollout_canary_steps
    if state.stage == SHADOW and age >= settings.rollout_shadow_s:
        if not steps:
            return Decision("promote", rollout.promoted, f"shadow {held}")
        return Decision("step", partial(rollout.stepped, share=steps[0]), f"shadow {held}")
    if state.stage == CANARY and age >= settings.rollout_bake_s:
        later = [share for share in steps if share > state.share]
        where = f"canary {state.share:.0%} {held}"
        if not later:
            return Decision("promote", rollout.promoted, where)
        return Decision("step", partial(rollout.stepped, share=later[0]), where)
    return None


def control(settings: Settings, client, now: datetime) -> str:
    """One controller tick on each served model: read, decide, move; say what happened."""
    models = (settings.price_model_name, settings.digits_model_name)
    return "\n".join(_control(settings, client, name, now) for name in models)


def _control(settings: Settings, client, name: str, now: datetime) -> str:
    state = rollout.read_state(client, name)
    if state.challenger is None or state.step_started_at is None:
        return f"{name}: no rollout"
    live = figures(settings, name, state)
    decision = decide(state, live, settings, now)
    if decision is None:
        return f"{name}: {state.describe()}; holding ({live.challenger_rows} listings)"
    event = rollout.move(
        settings, client, name, partial(_unless_moved, state, decision.change),
        decision.action, "controller", decision.reason, live.as_json(),
    )  # fmt: skip
    return f"{name}: {decision.action}: {event.after.describe()} ({decision.reason})"


def _unless_moved(
    judged: RolloutState, change: Callable[[RolloutState], RolloutState], current: RolloutState
) -> RolloutState:
    """``change`` of ``current`` if it is still the step the figures were read for (a person
    may have moved the rollout meanwhile)."""
    if current != judged:
        raise rollout.RolloutError("the rollout moved while the controller judged it")
    return change(current)
