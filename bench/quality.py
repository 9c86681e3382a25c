"""Model-quality benchmark: the real realtor sample through the platform, every candidate scored
on a random holdout of that file.

The simulator serves ``../shared/data/realtor/realtor_sample.csv.gz`` in its 10 slices; each
batch is landed and cleaned by the platform's own code into a throwaway PostgreSQL server; the
clean listings are split 80/20 at random (seed 0) and each candidate is trained by
``realty.model.training`` in its own process, so its seconds and peak RSS are its own. Writes
``bench/results/quality.json``.

    python bench/quality.py [--csv PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "quality.json"
SAMPLE = REPO.parent / "shared" / "data" / "realtor" / "realtor_sample.csv.gz"
HOLDOUT = 0.2
SEED = 0


def land_and_clean(csv: Path, home: Path):
    """Every batch of the CSV through landing and cleaning; the typed clean listings."""
    from realty.ingest.data_api import DataApiClient
    from realty.ingest.landing import land_next_batch
    from realty.store.clean import clean_landed_batch, read_clean_listings
    from realty.store.db import connect
    from realty_ops.sandbox import SimulatorProcess, make_settings
    from realty_ops.stack import Stack

    settings = make_settings(home)
    stack = Stack(settings, only=("postgres",))
    stack.start()
    simulator = SimulatorProcess(home, REALTY_SOURCE_CSV=str(csv)).start()
    try:
        client = DataApiClient(simulator.url, 1, "quality", 120.0, 2, 1.0)
        keys = []
        with connect("raw_data", settings) as raw, connect("clean_data", settings) as clean:
            while (landed := land_next_batch(raw, client)) is not None:
                clean_landed_batch(raw, clean, landed.key)
                keys.append(landed.key)
            return read_clean_listings(clean, keys)
    finally:
        simulator.stop()
        stack.stop()


def train_one(name: str, train_file: Path, eval_file: Path) -> None:
    """Child process: train one candidate, print its scores, seconds and peak RSS as JSON."""
    import pandas as pd

    from realty.model.training import train_candidates

    train, holdout = pd.read_pickle(train_file), pd.read_pickle(eval_file)
    started = time.perf_counter()
    [result] = train_candidates(train, holdout, candidates=[name])
    print(
        json.dumps(
            {
                "r2_log": round(result.metrics["r2_log"], 4),
                "mae_usd": round(result.metrics["mae_usd"]),
                "rmse_log": round(result.metrics["rmse_log"], 4),
                "seconds": round(time.perf_counter() - started, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--csv", type=Path, default=SAMPLE)
    args = parser.parse_args()

    from realty.model.training import CANDIDATES

    work = Path(tempfile.mkdtemp(prefix="realty-quality-"))
    listings = land_and_clean(args.csv, work)
    holdout = listings.sample(frac=HOLDOUT, random_state=SEED)
    train = listings.drop(holdout.index)
    train.to_pickle(work / "train.pkl")
    holdout.to_pickle(work / "holdout.pkl")
    candidates = {}
    for name in CANDIDATES:
        output = subprocess.run(
            [sys.executable, __file__, "--child", name, str(work / "train.pkl"),
             str(work / "holdout.pkl")],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        candidates[name] = json.loads(output.strip().splitlines()[-1])
        print(name, candidates[name], flush=True)
    best = min(candidates, key=lambda name: candidates[name]["mae_usd"])
    baseline = candidates["baseline_median"]["mae_usd"]
    result = {
        "source": str(args.csv.name),
        "clean_rows": len(listings),
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        "candidates": candidates,
        "best": best,
        "baseline_mae_usd": baseline,
        "best_mae_reduction_vs_baseline": round(1 - candidates[best]["mae_usd"] / baseline, 4),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        train_one(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        main()
