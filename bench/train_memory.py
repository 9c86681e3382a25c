"""Training-memory benchmark: every candidate trained on 1,000,000 rows, its seconds and the
peak RSS of the process that trained it (the bar: within 4 GB).

The rows come from the simulator's generator directly (``source.generator.generate_batch``, the
whole virtual file in 5 batches of 250,000), cleaned in memory by the platform's cleaning rules
(``realty.ingest.cleaning.clean_batch``): the same rows and types the platform would land and clean,
without spending minutes in PostgreSQL first. The clean listings are split as the loop splits
them (``split_for_training``, 20% eval per batch), and each candidate is trained by
``realty.model.training.train_candidates`` in a process of its own, so its peak RSS is its own
(it includes reading the training frame). Writes ``bench/results/train_memory.json``.

    python bench/train_memory.py [--rows 1250000] [--max-seconds 900]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results" / "train_memory.json"
BATCHES = 5
LIMIT_MB = 4096


def clean_listings(rows: int):
    """``rows`` generated listings in BATCHES batches, through the cleaning rules."""
    import pandas as pd

    from realty.ingest.cleaning import clean_batch
    from realty.schema import LISTING_COLUMNS
    from source.generator import generate_batch

    frames = []
    for number in range(1, BATCHES + 1):
        generated = generate_batch(1, "memory", number, rows // BATCHES, BATCHES)
        raw = pd.DataFrame(generated, columns=list(LISTING_COLUMNS), dtype=object)
        raw = raw.map(lambda v: None if v is None else str(v))
        raw.insert(0, "row_index", range(len(raw)))
        clean = clean_batch(raw).clean
        clean.insert(0, "batch_key", f"g1-memory-b{number:03d}")
        frames.append(clean)
        del generated, raw
    return pd.concat(frames, ignore_index=True)


def train_one(name: str, train_file: Path, eval_file: Path, max_seconds: float) -> None:
    """Child process: train one candidate, print its seconds, peak RSS and scores as JSON."""
    import pandas as pd

    from realty.model.training import TrainingBudget, train_candidates

    train, evaluation = pd.read_pickle(train_file), pd.read_pickle(eval_file)
    started = time.perf_counter()
    [result] = train_candidates(
        train, evaluation, TrainingBudget(max_seconds=max_seconds), candidates=[name]
    )
    print(
        json.dumps(
            {
                "train_rows": result.train_rows,
                "seconds": round(time.perf_counter() - started, 1),
                "fit_seconds": round(result.train_seconds, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "r2_log": round(result.metrics["r2_log"], 4),
                "mae_usd": round(result.metrics["mae_usd"]),
                "stopped_by_deadline": bool(result.params.get("stopped_by_deadline", False)),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_250_000, help="generated (before the split)")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="per candidate")
    args = parser.parse_args()

    from realty.model.training import CANDIDATES, split_for_training

    work = Path(tempfile.mkdtemp(prefix="realty-train-memory-"))
    listings = clean_listings(args.rows)
    newest = listings["batch_key"].iloc[-1]
    train, evaluation = split_for_training(listings, newest)
    train.to_pickle(work / "train.pkl")
    evaluation.to_pickle(work / "eval.pkl")
    print(f"{len(listings):,} clean listings: {len(train):,} train, {len(evaluation):,} eval")
    del listings, train, evaluation
    candidates = {}
    for name in CANDIDATES:
        output = subprocess.run(
            [sys.executable, __file__, "--child", name, str(work / "train.pkl"),
             str(work / "eval.pkl"), str(args.max_seconds)],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        candidates[name] = json.loads(output.strip().splitlines()[-1])
        print(name, candidates[name], flush=True)
    peak = max(c["peak_rss_mb"] for c in candidates.values())
    result = {
        "source": "source.generator (5 batches), cleaned by realty.ingest.cleaning in memory",
        "max_seconds_per_candidate": args.max_seconds,
        "candidates": candidates,
        "peak_rss_mb": peak,
        "within_4gb": peak <= LIMIT_MB,
        "load_average_1min": round(os.getloadavg()[0], 1),
        "cpus": os.cpu_count(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        train_one(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), float(sys.argv[5]))
    else:
        main()
