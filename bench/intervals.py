"""Held-out coverage of the price intervals: do 90% intervals cover 90% of later listings?

``../shared/data/realtor/realtor_sample.csv.gz`` is cut into the 10 slices the simulator serves
(``source.csv_slices``) and each is cleaned by the platform's rules (``clean_batch``; a listing
an earlier batch delivered is dropped, as CLEAN does), in this process: no servers, as this
measures the model, not the loop. For each batch k from
``--first`` on, the candidates are trained on batches 1..k the way the loop trains them
(``split_for_training``: a fifth of every batch held out as the eval split) and the best one
prices batch k + 1, which no model of that step saw: the share of those listings whose real
price lies in its interval is the realized coverage. Its intervals are calibrated as the loop
calibrates them: on the residuals each earlier step's model had on the batch after it (what
the drift verdict of that batch records of production), and at k = 1, with none yet, on its
eval split. Beside it: the same intervals without Mondrian groups (one pooled quantile), the
intervals calibrated on the eval split instead (the method before 2026-12-04), the coverage of
the eval split its version records, and per-state coverage. The control,
``random_holdout``: a random fifth of all listings held out and the model trained on the rest,
so the held-out rows are exchangeable with the eval split, which a later batch of this
state-ordered file is not.

    python bench/intervals.py [--level 0.9] [--first 1] [--candidates catboost] [--iterations 300]

Writes bench/results/intervals.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from realty.ingest.cleaning import clean_batch
from realty.model.intervals import ConformalCalibration, IntervalTable, UnseenResiduals, covered
from realty.model.price_model import INTERVAL_GROUP
from realty.model.training import TrainingBudget, split_for_training, train_candidates
from realty.schema import LISTING_COLUMNS
from source.csv_slices import CsvSlices

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "intervals.json"
SAMPLE = REPO.parent / "shared" / "data" / "realtor" / "realtor_sample.csv.gz"
BATCHES = 10  # the simulator's default
MIN_STATE_ROWS = 300  # held-out rows a state needs for its own line in the results


def clean_batches(csv: Path) -> pd.DataFrame:
    """The clean listings of every slice, with ``batch_key`` b001..b010 in delivery order."""
    slices, frames, delivered = CsvSlices(csv, BATCHES), [], set()
    for number in range(1, BATCHES + 1):
        raw = pd.DataFrame(slices.rows(number), columns=list(LISTING_COLUMNS))
        raw.insert(0, "row_index", range(len(raw)))
        clean = clean_batch(raw).clean
        clean = clean[~clean["row_hash"].isin(delivered)]
        delivered.update(clean["row_hash"])
        frames.append(clean.assign(batch_key=f"b{number:03d}"))
    return pd.concat(frames, ignore_index=True)


def fit(
    seen: pd.DataFrame,
    newest: str,
    level: float,
    args: argparse.Namespace,
    unseen: UnseenResiduals | None = None,
) -> dict:
    """The best candidate trained on ``seen`` as the loop trains (eval split: a fifth of every
    batch, ``newest`` included), calibrated on ``unseen`` (else its eval split), and the
    calibration its eval split alone would give."""
    train, evaluation = split_for_training(seen, newest, 0.2, seed=0)
    budget = TrainingBudget(iterations=args.iterations, max_seconds=args.max_seconds)
    started = time.perf_counter()
    best = train_candidates(
        train, evaluation, budget, args.candidates, interval_level=level, unseen=unseen
    )[0]
    seconds = time.perf_counter() - started
    log_pred, groups = best.model.log_prices_and_groups(evaluation)
    on_eval = ConformalCalibration.fit(
        groups, np.log(evaluation["price"].to_numpy("float64")), log_pred
    )
    return {
        "model": best.model,
        "eval_split_table": on_eval.table(level),
        "candidate": best.name,
        "calibration": best.params["interval_calibration"],
        "train_rows": len(train),
        "eval_rows": len(evaluation),
        "train_seconds": round(seconds, 1),
        "eval_coverage": round(best.metrics["interval_coverage"], 4),
    }


def measure(fitted: dict, held_out: pd.DataFrame, level: float) -> tuple[dict, pd.DataFrame]:
    """``fitted``'s intervals on ``held_out``: the figures, and per row (state, covered,
    covered by the pooled quantile alone) for the overall figures."""
    model, eval_split_table = fitted.pop("model"), fitted.pop("eval_split_table")
    priced = model.price_frame(held_out, level)
    groups = model.features(held_out)[INTERVAL_GROUP].tolist()
    price = held_out["price"].to_numpy("float64")
    log_true, log_pred = np.log(price), np.log(priced.price)
    table = model.interval_table(level)
    pooled_only = IntervalTable(level, table.pooled, {})
    rows = pd.DataFrame(
        {
            "state": groups,
            "covered": (priced.low <= price) & (price <= priced.high),
            "covered_pooled": covered(pooled_only, groups, log_true, log_pred),
            "covered_eval_split": covered(eval_split_table, groups, log_true, log_pred),
            "residual": np.abs(log_true - log_pred),
        }
    )
    figures = {
        **fitted,
        "held_out_rows": len(held_out),
        "coverage": round(float(rows["covered"].mean()), 4),
        "coverage_pooled_only": round(float(rows["covered_pooled"].mean()), 4),
        "coverage_eval_split_calibration": round(float(rows["covered_eval_split"].mean()), 4),
        "share_with_own_state_quantile": round(
            float(np.mean([group in table.by_group for group in groups])), 4
        ),
        "mean_half_width_log": round(float(table.half_widths(groups).mean()), 4),
        "mae_log": round(float(np.abs(log_true - log_pred).mean()), 4),
    }
    return figures, rows


def next_batch(
    listings: pd.DataFrame,
    keys: list[str],
    k: int,
    level: float,
    args: argparse.Namespace,
    unseen: UnseenResiduals | None,
) -> tuple[dict, pd.DataFrame]:
    """Train on batches 1..k, measure on batch k + 1."""
    seen = listings[listings["batch_key"].isin(keys[:k])]
    fitted = fit(seen, keys[k - 1], level, args, unseen)
    figures, rows = measure(fitted, listings[listings["batch_key"] == keys[k]], level)
    return {"trained_on": f"{keys[0]}..{keys[k - 1]}", "held_out": keys[k], **figures}, rows


def random_holdout(
    listings: pd.DataFrame, keys: list[str], level: float, args: argparse.Namespace
) -> dict:
    """The control: a random fifth of every listing held out (exchangeable with the eval
    split, unlike a later batch), the model trained on the rest of every batch."""
    held_out = listings.sample(frac=0.2, random_state=0)
    rest = listings.drop(held_out.index)
    figures, _ = measure(fit(rest, keys[-1], level, args), held_out, level)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--csv", type=Path, default=SAMPLE)
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--first", type=int, default=1, help="the first k trained on 1..k")
    parser.add_argument("--candidates", nargs="+", default=["catboost"])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args()

    listings = clean_batches(args.csv)
    keys = sorted(listings["batch_key"].unique())
    steps, rows = [], []
    for k in range(args.first, len(keys)):
        # What the verdicts of batches 2..k recorded: each earlier model on the batch after it.
        unseen = (
            UnseenResiduals(
                [g for r in rows for g in r["state"]],
                np.concatenate([r["residual"].to_numpy() for r in rows]),
                len(rows),
            )
            if rows
            else None
        )
        figures, held_out = next_batch(listings, keys, k, args.level, args, unseen)
        steps.append(figures)
        rows.append(held_out)
        print(json.dumps(figures), flush=True)
    control = random_holdout(listings, keys, args.level, args)
    print(json.dumps({"random_holdout": control}), flush=True)
    every = pd.concat(rows, ignore_index=True)
    by_state = every.groupby("state")["covered"].agg(["mean", "size"])
    by_state = by_state[by_state["size"] >= MIN_STATE_ROWS].sort_values("size", ascending=False)
    result = {
        "source": args.csv.name,
        "clean_rows": len(listings),
        "batches": len(keys),
        "candidates": args.candidates,
        "iterations": args.iterations,
        "coverage_nominal": args.level,
        "held_out_rows": len(every),
        "coverage_realized": round(float(every["covered"].mean()), 4),
        "coverage_per_step": {
            "median": float(np.median([s["coverage"] for s in steps])),
            "min": min(s["coverage"] for s in steps),
            "max": max(s["coverage"] for s in steps),
        },
        "coverage_realized_pooled_only": round(float(every["covered_pooled"].mean()), 4),
        "coverage_realized_eval_split_calibration": round(
            float(every["covered_eval_split"].mean()), 4
        ),
        "coverage_by_state": {
            state: {"coverage": round(float(row["mean"]), 4), "rows": int(row["size"])}
            for state, row in by_state.iterrows()
        },
        "steps": steps,
        "random_holdout": control,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}, indent=2))


if __name__ == "__main__":
    main()
