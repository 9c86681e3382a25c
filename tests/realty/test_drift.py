"""Drift: effect sizes decide, p-values inform, and the verdict names what changed."""

from __future__ import annotations

import gzip
import json
import re
from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realty.drift import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    DriftReport,
    DriftThresholds,
    ReferenceProfile,
    drift_report,
)
from realty.ingest.cleaning import CleaningRules, clean_batch
from realty.model_error import PerformanceDrift, RealizedError, evidence
from tests.conftest import require_sample

STATES = ("Massachusetts", "Connecticut", "New York", "New Jersey", "Pennsylvania", "Maine")
VALIDATION = {"mae_usd": 40_000.0, "rmse_log": 0.30, "r2_log": 0.80, "mae_log": 0.20}


def listings(
    n: int, seed: int = 0, *, price_factor: float = 1.0, size_factor: float = 1.0
) -> pd.DataFrame:
    """Synthetic CLEAN listings: 6 states x 40 towns, one zip per town, typed as CLEAN stores."""
    rng = np.random.default_rng(seed)
    state, town = rng.integers(0, len(STATES), n), rng.integers(0, 40, n)
    size = np.round(np.exp(rng.normal(7.4, 0.4, n))) * size_factor
    sold = np.datetime64("1990-01-01") + rng.integers(0, 12_000, n).astype("timedelta64[D]")
    sold = sold.astype(object)  # datetime.date, as CLEAN hands dates over
    sold[rng.random(n) < 0.4] = None
    log_price = 11.5 + 0.8 * np.log(size / 1600) + 0.1 * state + rng.normal(0, 0.3, n)
    frame = pd.DataFrame(
        {
            "status": np.where(rng.random(n) < 0.9, "for_sale", "sold").astype(object),
            "price": np.exp(log_price) * price_factor,
            "bed": pd.array(rng.integers(1, 6, n), dtype="Int64"),
            "bath": pd.array(rng.integers(1, 4, n), dtype="Int64"),
            "acre_lot": np.where(rng.random(n) < 0.15, np.nan, np.exp(rng.normal(-1, 1.2, n))),
            "city": np.char.add("Town ", town.astype(str)).astype(object),
            "state": np.asarray(STATES, dtype=object)[state],
            "zip_code": np.char.zfill((state * 100 + town).astype(str), 5).astype(object),
            "house_size": np.where(rng.random(n) < 0.2, np.nan, size),
            "prev_sold_date": sold,
            "batch_key": f"batch-{seed}",
        }
    )
    frame.loc[rng.random(n) < 0.05, "bed"] = pd.NA
    return frame


@pytest.fixture(scope="module")
def reference() -> ReferenceProfile:
    return ReferenceProfile.from_frame(listings(40_000, seed=0))


def reasons_of(report: DriftReport) -> str:
    return "\n".join(report.reasons)


def test_two_halves_of_one_frame_do_not_drift() -> None:
    frame = listings(40_000, seed=1)
    half = np.random.default_rng(2).random(len(frame)) < 0.5
    report = drift_report(ReferenceProfile.from_frame(frame[half]), frame[~half])
    assert not report.retrain and report.reasons == []
    assert [f.feature for f in report.features] == [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES]
    assert all(f.psi < 0.01 and not f.drifted for f in report.features)
    assert report.target is not None and report.target.psi < 0.01
    assert abs(report.target.median_change) < 0.02
    assert all(u.share == 0 and u.top == () for u in report.unseen.values())


def test_unseen_states_are_named_by_rows_with_their_share(reference: ReferenceProfile) -> None:
    batch = listings(10_000, seed=3)
    batch.loc[:1499, "state"] = "Florida"  # 15%
    batch.loc[1500:2499, "state"] = "Texas"  # 10%
    batch.loc[2500:2899, "state"] = "California"  # 4%
    report = drift_report(reference, batch)
    assert report.retrain
    assert report.unseen["state"].share == pytest.approx(0.29)
    assert report.unseen["state"].top == (("Florida", 1500), ("Texas", 1000), ("California", 400))
    assert report.reasons[0] == (
        "29% of rows come from 3 states never seen in training (Florida, Texas, California)"
    )
    # Their towns exist in other states, but a city is only known together with its state.
    assert report.unseen["city"].share == pytest.approx(0.29)
    assert report.reasons[1].startswith("29% of rows come from ")
    assert re.search(r"\(Town \d+, Florida; Town \d+, Florida; ", report.reasons[1])


def test_unseen_state_share_below_threshold_is_only_reported(reference: ReferenceProfile) -> None:
    batch = listings(10_000, seed=4)
    batch.loc[:899, "state"] = "Texas"  # 9% < 10%
    report = drift_report(reference, batch)
    assert report.unseen["state"].share == pytest.approx(0.09)
    assert not report.unseen["state"].drifted
    assert "never seen" not in reasons_of(report)


def test_a_town_known_in_another_state_is_an_unseen_city() -> None:
    frame = listings(20_000, seed=5)
    in_maine = (frame["state"] == "Maine") & (frame["city"] == "Town 7")
    reference = ReferenceProfile.from_frame(frame[~in_maine])
    report = drift_report(reference, frame, DriftThresholds(unseen_city_share=0.001))
    assert "Town 7, Connecticut" in reference.cities and "Town 7, Maine" not in reference.cities
    assert report.unseen["city"].top == (("Town 7, Maine", int(in_maine.sum())),)
    assert report.unseen["city"].share == pytest.approx(in_maine.mean())
    assert report.unseen["state"].share == 0


def test_price_shift_is_target_drift(reference: ReferenceProfile) -> None:
    report = drift_report(reference, listings(20_000, seed=6, price_factor=1.3))
    assert report.retrain and report.target is not None and report.target.drifted
    assert report.target.median_change == pytest.approx(0.30, abs=0.02)
    assert len(report.reasons) == 1  # the features did not move
    assert re.fullmatch(
        r"price PSI \d\.\d\d \(median price \+\d\d%: \$[\d,]+ vs \$[\d,]+\)", report.reasons[0]
    )
    assert report.target.psi > 0.25


def test_performance_drift_only_above_the_mae_threshold(reference: ReferenceProfile) -> None:
    batch = listings(10_000, seed=7)
    mild = PerformanceDrift({**VALIDATION, "mae_log": 0.23, "mae_usd": 60_000.0}, VALIDATION)
    report = drift_report(reference, batch, performance=mild)
    assert not report.retrain and report.performance is not None
    assert report.performance.change["mae_log"] == pytest.approx(0.15)
    assert not report.performance.drifted  # dollars alone (+50%) do not retrain
    worse = PerformanceDrift(
        {**VALIDATION, "mae_log": 0.282, "mae_usd": 56_400.0, "r2_log": 0.6}, VALIDATION
    )
    report = drift_report(reference, batch, performance=worse)
    assert report.retrain and report.performance is not None and report.performance.drifted
    assert report.reasons == [
        "production MAE (log price) on this batch is 41% above its validation MAE (log price) "
        "(0.282 vs 0.200; in dollars $56,400 vs $40,000)"
    ]
    assert report.performance.change["r2_log"] == pytest.approx(-0.25)


def test_realized_error_on_labelled_sales_is_the_first_reason_past_the_threshold(
    reference: ReferenceProfile,
) -> None:
    batch = listings(10_000, seed=7)  # no drift of its own
    close = drift_report(reference, batch, realized=RealizedError(80, 0.21, 0.20))
    assert not close.retrain and close.realized is not None and not close.realized.drifted
    assert close.notes == [
        "production's realized MAE (log price) on 80 labelled sales is 5% above its "
        "validation MAE (0.210 vs 0.200)"
    ]
    worse = drift_report(reference, batch, realized=RealizedError(80, 0.30, 0.20))
    assert worse.retrain and worse.reasons == [
        "production's realized MAE (log price) on 80 labelled sales is 50% above its "
        "validation MAE (0.300 vs 0.200)"
    ]
    # What a stale retrain says beside the age: the stored report's realized error and top PSI.
    said = evidence(json.loads(json.dumps(close.to_dict())))
    assert said[0] == close.notes[0] and said[1].startswith("largest drift since the reference:")


def test_the_expected_error_follows_the_batch_share_of_unseen_zip_codes(
    reference: ReferenceProfile,
) -> None:
    batch = listings(10_000, seed=7)
    batch.loc[:4999, "zip_code"] = "99999"  # half the rows from a zip code training never saw
    validation = {**VALIDATION, "mae_log_seen_zip": 0.18, "mae_log_unseen_zip": 0.42}
    # 0.33 is 65% above the validation MAE, but only 10% above the 0.30 expected at 50% unseen.
    alike = drift_report(
        reference, batch, performance=PerformanceDrift({"mae_log": 0.33}, validation)
    )
    assert alike.performance is not None and alike.performance.unseen_zip_share == 0.5
    assert alike.performance.expected["mae_log"] == pytest.approx(0.30)
    assert not alike.performance.drifted
    assert not any(r.startswith("production") for r in alike.reasons)
    worse = drift_report(
        reference, batch, performance=PerformanceDrift({"mae_log": 0.39}, validation)
    )
    assert worse.performance is not None and worse.performance.drifted
    assert worse.reasons[0] == (
        "production MAE (log price) on this batch is 30% above the MAE (log price) expected "
        "with 50% unseen zip codes (0.390 vs 0.300; validation 0.200)"
    )
    # A batch from known zip codes expects the seen-zip error: the same 0.33 is now too much.
    known = drift_report(
        reference,
        listings(10_000, seed=7),
        performance=PerformanceDrift({"mae_log": 0.33}, validation),
    )
    assert known.performance is not None and known.performance.expected["mae_log"] == 0.18
    assert known.performance.drifted


def test_mae_in_dollars_is_watched_when_log_price_is_absent(reference: ReferenceProfile) -> None:
    performance = PerformanceDrift({"mae_usd": 60_000.0}, {"mae_usd": 40_000.0, "r2_log": 0.8})
    report = drift_report(reference, listings(5_000, seed=8), performance=performance)
    assert report.reasons == [
        "production MAE on this batch is 50% above its validation MAE ($60,000 vs $40,000)"
    ]


def test_reasons_come_by_severity(reference: ReferenceProfile) -> None:
    batch = listings(10_000, seed=9, price_factor=1.5)
    batch.loc[:4999, "state"] = "Florida"
    batch.loc[batch.index[-5000:], "house_size"] = np.nan  # missing 20% -> ~60%
    performance = PerformanceDrift({"mae_usd": 80_000.0}, {"mae_usd": 40_000.0})
    reasons = drift_report(reference, batch, performance=performance).reasons
    assert reasons[0].startswith("production MAE")
    assert reasons[1].startswith("50% of rows come from 1 state never seen in training (Florida)")
    assert reasons[2].startswith("50% of rows come from 40 cities")
    assert reasons[3].startswith("price PSI")
    assert any(r.startswith("house_size PSI") and "missing 20% → 6" in r for r in reasons[4:])


def test_tiny_shift_at_large_n_is_significant_but_no_retrain() -> None:
    reference = ReferenceProfile.from_frame(listings(100_000, seed=10))
    batch = listings(300_000, seed=11, price_factor=1.02, size_factor=1.02)
    report = drift_report(reference, batch)
    house_size = next(f for f in report.features if f.feature == "house_size")
    assert report.target is not None
    assert house_size.p_value is not None and house_size.p_value < 1e-6
    assert report.target.p_value is not None and report.target.p_value < 1e-6
    assert house_size.psi < 0.01 and report.target.psi < 0.01
    assert not report.retrain and report.reasons == []


def test_no_reference_is_the_initial_baseline() -> None:
    report = drift_report(None, listings(100, seed=13))
    assert report.retrain and report.reasons == ["initial baseline"]
    assert report.reference_rows is None and report.features == []
    assert json.loads(json.dumps(report.to_dict(), allow_nan=False))["reasons"] == [
        "initial baseline"
    ]
    assert "**Verdict: retrain**" in report.to_markdown()


def test_profile_round_trip_gives_the_identical_report(reference: ReferenceProfile) -> None:
    stored = json.loads(json.dumps(reference.to_dict(), allow_nan=False))
    restored = ReferenceProfile.from_dict(stored)
    assert restored == reference
    batch = listings(5_000, seed=14, price_factor=1.2)
    batch.loc[:999, "state"] = "Ohio"
    assert drift_report(restored, batch) == drift_report(reference, batch)
    assert stored["cities"]["Maine"][:2] == ["Town 0", "Town 1"]  # grouped by state, sorted


def test_profile_of_another_format_is_refused(reference: ReferenceProfile) -> None:
    with pytest.raises(ValueError, match="format"):
        ReferenceProfile.from_dict({**reference.to_dict(), "format": 99})


def test_missing_rate_jump_is_detected_even_below_the_psi_threshold(
    reference: ReferenceProfile,
) -> None:
    batch = listings(20_000, seed=15)
    present = batch.index[batch["house_size"].notna()]
    batch.loc[present[:2_600], "house_size"] = np.nan  # 20% -> 33% missing
    report = drift_report(reference, batch)
    house_size = next(f for f in report.features if f.feature == "house_size")
    assert house_size.psi < 0.25 and house_size.drifted
    assert house_size.missing_rate_batch - house_size.missing_rate_ref == pytest.approx(
        0.13, abs=0.01
    )
    assert re.fullmatch(
        r"house_size missing 20% → 3\d% \(median [\d.]+ → [\d.]+\)", report.reasons[0]
    )


def test_categorical_shift_names_the_category_that_moved(reference: ReferenceProfile) -> None:
    batch = listings(10_000, seed=16)
    batch.loc[:2999, "status"] = "ready_to_build"  # absent from the reference
    report = drift_report(reference, batch)
    assert len(report.reasons) == 1
    assert re.fullmatch(
        r"status PSI \d\.\d\d \(other 0% → 30%, mostly ready_to_build\)", report.reasons[0]
    )
    batch.loc[:2999, "status"] = "sold"  # sold 10% -> ~37%, for_sale 90% -> ~63%
    assert re.fullmatch(
        r"status PSI \d\.\d\d \((for_sale 90% → 6\d%|sold 10% → 3\d%)\)",
        drift_report(reference, batch).reasons[0],
    )


def test_a_tail_shift_within_the_top_bin_is_caught_by_wasserstein_only() -> None:
    frame = listings(40_000, seed=17)
    reference = ReferenceProfile.from_frame(frame)
    batch = frame.copy()
    tail = batch["acre_lot"] > batch["acre_lot"].quantile(0.9)
    batch.loc[tail, "acre_lot"] *= 10  # the top decile stays the top decile
    acre_lot = next(f for f in drift_report(reference, batch).features if f.feature == "acre_lot")
    assert acre_lot.psi < 1e-9 and acre_lot.distance is not None and acre_lot.distance > 1
    assert drift_report(reference, batch).reasons[0].startswith("acre_lot Wasserstein")
    assert not drift_report(reference, batch, DriftThresholds(wasserstein=None)).retrain


def test_a_small_batch_reports_distribution_drift_without_acting(
    reference: ReferenceProfile,
) -> None:
    batch = listings(300, seed=18, price_factor=2.0)
    report = drift_report(reference, batch)
    assert report.target is not None and report.target.psi > 1
    assert not report.retrain and report.notes == [
        "300 rows < 1,000: distribution drift not acted on"
    ]
    batch.loc[:99, "state"] = "Texas"  # unseen geography still counts
    assert drift_report(reference, batch).reasons[0].startswith("33% of rows come from 1 state")


def test_report_is_json_ready_and_renders_as_markdown(reference: ReferenceProfile) -> None:
    batch = listings(5_000, seed=19)
    batch["house_size"] = np.nan  # no values: no distance, no KS
    batch.loc[:999, "state"] = "Ohio"
    report = drift_report(
        reference, batch, performance=PerformanceDrift({"mae_log": 0.25}, VALIDATION)
    )
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["retrain"] is True and data["reasons"] == report.reasons
    assert data["unseen"]["state"]["top"] == [["Ohio", 1000]]
    assert data["performance"]["change"]["mae_log"] == pytest.approx(0.25)
    assert data["thresholds"]["psi"] == 0.25
    house_size = next(f for f in data["features"] if f["feature"] == "house_size")
    assert house_size["distance"] is None and house_size["missing_rate_batch"] == 1.0
    markdown = report.to_markdown()
    assert markdown.startswith("**Verdict: retrain** (5,000 rows vs a reference of 40,000)")
    assert "| feature | kind | PSI | distance | missing ref → batch | KS p | shift | drifted |" in (
        markdown
    )
    assert "| state | 20% | 1 | Ohio (1,000) |" in markdown
    assert all(f"- {reason}" in markdown for reason in report.reasons)


def test_columns_are_checked_and_empty_batches_do_not_retrain(reference: ReferenceProfile) -> None:
    with pytest.raises(ValueError, match="house_size"):
        drift_report(reference, listings(10).drop(columns="house_size"))
    with pytest.raises(ValueError, match="at least one"):
        ReferenceProfile.from_frame(listings(10).head(0))
    report = drift_report(reference, listings(10).head(0))
    assert not report.retrain and report.notes == ["empty batch"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {
                "status": st.sampled_from(["for_sale", "sold", "ready_to_build"]),
                "price": st.floats(1_000, 1e8),
                "bed": st.none() | st.integers(0, 30),
                "acre_lot": st.none() | st.floats(0.001, 50_000),
                "state": st.sampled_from([*STATES, "Guam"]),
                "city": st.sampled_from(["Town 1", "Town 2", "Elsewhere"]),
                "zip_code": st.none() | st.sampled_from(["00001", "00102", "99999"]),
                "house_size": st.none() | st.floats(100, 50_000),
                "prev_sold_date": st.none() | st.dates(date(1900, 1, 1), date(2024, 6, 30)),
            }
        ),
        min_size=1,
        max_size=60,
    ),
    min_rows=st.sampled_from([1, 1_000]),
)
def test_any_batch_gets_a_consistent_json_ready_report(
    reference: ReferenceProfile, rows: list[dict], min_rows: int
) -> None:
    batch = pd.DataFrame(rows).assign(bath=None, batch_key="b")
    batch["bed"] = batch["bed"].astype("Int64")
    report = drift_report(reference, batch, DriftThresholds(min_rows=min_rows))
    json.dumps(report.to_dict(), allow_nan=False)
    report.to_markdown()
    assert report.retrain == bool(report.reasons)
    for feature in report.features:
        assert feature.psi >= 0 and 0 <= feature.missing_rate_batch <= 1
        assert feature.distance is None or feature.distance >= 0
        assert feature.p_value is None or 0 <= feature.p_value <= 1
    guam = sum(row["state"] == "Guam" for row in rows)
    assert report.unseen["state"].share == pytest.approx(guam / len(rows))
    if min_rows > len(rows):
        assert not any(f.drifted for f in report.features)


@pytest.fixture(scope="module")
def real_listings() -> pd.DataFrame:
    with gzip.open(require_sample(), "rt") as handle:
        raw = pd.read_csv(handle, dtype=str, keep_default_na=False).replace("", None)
    raw.insert(0, "row_index", range(len(raw)))
    return clean_batch(raw, CleaningRules(today=date(2024, 6, 30))).clean


def test_real_sample_halves_do_not_drift(real_listings: pd.DataFrame) -> None:
    half = np.random.default_rng(20).random(len(real_listings)) < 0.5
    reference = ReferenceProfile.from_frame(real_listings[half])
    report = drift_report(reference, real_listings[~half])
    assert not report.retrain, report.reasons
    assert all(f.psi < 0.02 for f in report.features)


def test_real_sample_held_out_states_are_named(real_listings: pd.DataFrame) -> None:
    held_out = {"Florida", "Texas", "California"}
    half = np.random.default_rng(21).random(len(real_listings)) < 0.5
    training = real_listings[half & ~real_listings["state"].isin(held_out)]
    batch = real_listings[~half & (real_listings["row_index"] < 7_500)]  # the national sample
    report = drift_report(ReferenceProfile.from_frame(training), batch)
    # Rare states may miss the training half too: unseen is whatever training lacks.
    unseen = batch["state"][~batch["state"].isin(set(training["state"]))]
    counts = unseen.value_counts().sort_index().sort_values(ascending=False, kind="stable")
    assert set(counts.index[:3]) == held_out
    share = len(unseen) / len(batch)
    assert report.unseen["state"].share == pytest.approx(share)
    assert report.unseen["state"].top == tuple((s, int(n)) for s, n in counts.head(5).items())
    names = ", ".join(counts.index[:5]) + (
        f" and {len(counts) - 5} more" if len(counts) > 5 else ""
    )
    assert report.retrain and report.reasons[0] == (
        f"{share:.0%} of rows come from {len(counts)} states never seen in training ({names})"
    )
