"""Conformal price intervals: the quantile, Mondrian groups and their fallback, coverage."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pytest

from realty.model.intervals import (
    ConformalCalibration,
    conformal_quantile,
    covered,
    cross_fit_coverage,
    interval_scores,
)
from realty.model.price_model import PriceModel
from realty.model.training import MedianPriceBaseline


@pytest.mark.parametrize(
    ("n", "level", "expected"),
    [
        (9, 0.9, 9.0),  # rank ceil(10 * 0.9) = 9 of 9
        (8, 0.9, math.inf),  # rank 9 of 8: too few residuals to bound a 90% interval
        (99, 0.9, 90.0),  # (99 + 1) * 0.9 is 90.00000000000001 in floating point: rank 90
        (100, 0.9, 91.0),  # rank ceil(90.9) = 91
        (1000, 0.5, 501.0),
        (19, 0.95, 19.0),
    ],
)
def test_the_finite_sample_quantile_is_the_ceil_n_plus_1_level_th_residual(
    n: int, level: float, expected: float
) -> None:
    residuals = np.arange(1, n + 1, dtype="float64")
    assert conformal_quantile(residuals, level) == expected


@pytest.mark.parametrize("level", [0.0, 1.0, 90])
def test_a_level_outside_0_1_is_refused(level: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        conformal_quantile(np.arange(10.0), level)


def heteroscedastic(rows_per_state: dict[str, int], sigma: dict[str, float], seed: int):
    """(states, log_true, log_pred): each state's log-price errors normal with its own sigma."""
    rng = np.random.default_rng(seed)
    states = [state for state, rows in rows_per_state.items() for _ in range(rows)]
    log_pred = rng.normal(12.5, 1.0, len(states))
    noise = rng.normal(0.0, [sigma[state] for state in states])
    return states, log_pred + noise, log_pred


SIGMA = {"Texas": 0.2, "Florida": 0.6}


def test_coverage_on_fresh_data_is_the_level_within_each_state() -> None:
    calibration = ConformalCalibration.fit(
        *heteroscedastic({"Texas": 2_000, "Florida": 2_000}, SIGMA, 0)
    )
    table = calibration.table(0.9)
    for state, sigma in SIGMA.items():
        # The 90% two-sided normal bound is 1.645 sigma; 2,000 residuals get it within ~5%.
        assert table.by_group[state] == pytest.approx(1.645 * sigma, rel=0.06)
        states, log_true, log_pred = heteroscedastic({state: 50_000}, SIGMA, 1)
        assert covered(table, states, log_true, log_pred).mean() == pytest.approx(0.9, abs=0.015)


def test_pooled_intervals_would_miss_the_noisy_state_that_mondrian_covers() -> None:
    """Why the groups: one pooled quantile over-covers Texas and under-covers Florida."""
    calibration = ConformalCalibration.fit(
        *heteroscedastic({"Texas": 2_000, "Florida": 2_000}, SIGMA, 0)
    )
    pooled = calibration.table(0.9)
    pooled = type(pooled)(pooled.level, pooled.pooled, {})  # the same quantile, no groups
    states, log_true, log_pred = heteroscedastic({"Florida": 50_000}, SIGMA, 1)
    assert covered(pooled, states, log_true, log_pred).mean() < 0.85
    assert covered(calibration.table(0.9), states, log_true, log_pred).mean() > 0.885


def test_a_state_with_too_few_rows_or_none_falls_back_to_the_pooled_quantile() -> None:
    rows = {"Texas": 100, "Florida": 99}
    calibration = ConformalCalibration.fit(*heteroscedastic(rows, SIGMA, 2), min_group_rows=100)
    assert set(calibration.by_group) == {"Texas"}
    table = calibration.table(0.9)
    assert table.pooled == conformal_quantile(calibration.pooled, 0.9)
    assert calibration.rows == 199
    widths = table.half_widths(["Texas", "Florida", "Ohio", "__missing__"])
    assert widths.tolist() == [table.by_group["Texas"], table.pooled, table.pooled, table.pooled]
    # At 99.5% Texas's 100 residuals cannot bound an interval (rank 101 of 100): pooled too.
    assert "Texas" not in calibration.table(0.995).by_group
    assert calibration.describe() == {
        "rows": 199,
        "min_group_rows": 100,
        "groups": {"Texas": 100},
    }


def test_too_few_residuals_for_a_level_give_no_intervals() -> None:
    calibration = ConformalCalibration.fit(*heteroscedastic({"Texas": 8}, SIGMA, 3))
    assert calibration.table(0.9) is None
    assert calibration.table(0.8) is not None  # rank ceil(9 * 0.8) = 8 of 8
    assert interval_scores(calibration, *heteroscedastic({"Texas": 8}, SIGMA, 3), 0.9) == {}


def test_cross_fit_coverage_measures_rows_their_own_calibration_did_not_see() -> None:
    data = heteroscedastic({"Texas": 3_000, "Florida": 1_000}, SIGMA, 4)
    coverage = cross_fit_coverage(*data, 0.9)
    assert coverage == pytest.approx(0.9, abs=0.02)
    assert coverage != cross_fit_coverage(*data, 0.9, seed=1)  # other halves, another count
    scores = interval_scores(ConformalCalibration.fit(*data), *data, 0.9)
    assert scores["interval_coverage"] == coverage
    # Three quarters of the rows have Texas's narrow interval, a quarter Florida's wide one.
    assert scores["interval_half_width_log"] == pytest.approx(
        1.645 * (0.75 * 0.2 + 0.25 * 0.6), rel=0.05
    )


LISTINGS = [
    {"status": "for_sale", "state": "Texas", "city": "Austin", "zip_code": "78701"},
    {"status": "sold", "state": "texas ", "city": "Dallas"},  # the feature spelling: Texas
    {"status": "for_sale", "state": "Ohio", "city": "Columbus"},
]


@pytest.fixture(scope="module")
def baseline() -> PriceModel:
    frame = pd.DataFrame(LISTINGS * 10)
    model = PriceModel(MedianPriceBaseline(), name="baseline_median")
    model.estimator.fit(model.features(frame), np.full(len(frame), 12.0))
    return model


def test_a_calibrated_model_brackets_each_price_by_its_states_quantile(baseline) -> None:
    baseline.calibration = ConformalCalibration(
        np.linspace(0.0, 1.0, 101), {"Texas": np.linspace(0.0, 0.1, 101)}, 100
    )
    priced = baseline.price_rows(LISTINGS, 0.9)
    price = math.exp(12.0)
    assert priced.price.tolist() == pytest.approx([price] * 3)
    texas, pooled = baseline.calibration.table(0.9).by_group["Texas"], 0.91  # rank 92 of 101
    assert priced.low.tolist() == pytest.approx(
        [price * math.exp(-texas), price * math.exp(-texas), price * math.exp(-pooled)]
    )
    assert priced.high.tolist() == pytest.approx(
        [price * math.exp(texas), price * math.exp(texas), price * math.exp(pooled)]
    )
    assert priced.level == 0.9
    framed = baseline.price_frame(pd.DataFrame(LISTINGS), 0.9)
    assert framed.low.tolist() == pytest.approx(priced.low.tolist())
    assert priced[1:].high.tolist() == pytest.approx(priced.high.tolist()[1:])


def test_a_model_pickled_before_intervals_prices_without_them(baseline) -> None:
    state = {k: v for k, v in vars(baseline).items() if k != "calibration"}
    old = PriceModel.__new__(PriceModel)  # as unpickling builds it: no __init__
    old.__dict__.update(state)
    old = pickle.loads(pickle.dumps(old))
    assert old.calibration is None
    priced = old.price_rows(LISTINGS, 0.9)
    assert priced.low is None and priced.high is None and priced.level is None
    assert priced.price.tolist() == pytest.approx(baseline.predict_rows(LISTINGS).tolist())
    assert priced[:1].price.tolist() == priced.price.tolist()[:1]
