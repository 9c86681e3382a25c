"""Reproduce a price model version's training data from RAW (``realty reproduce VERSION``).

A version records what it was trained on: its training run's parent holds ``snapshot.json``
(``realty.model.training.snapshot``: batch keys, rows, content hash) and the version's tags
repeat the rows and the hash (``rows``, ``snapshot_sha256``). ``reproduce`` cleans those
batches again from the rows landed in RAW with this code's cleaning rules, without writing
anything, takes the snapshot of what comes out and compares it with the recorded one. Where
the hashes differ it names the batches whose listings differ from what CLEAN holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient

from realty.model.training import snapshot
from realty.settings import Settings
from realty.store.clean import clean_row_hashes, reclean_from_raw
from realty.store.db import connect

SNAPSHOT_ARTIFACT = "snapshot.json"  # on the training's parent run (realty.model.versions)
COMPARED = ("batch_keys", "rows", "content_sha256")


@dataclass(frozen=True)
class Reproduction:
    version: str
    recorded: dict[str, Any]  # the snapshot the version records
    reproduced: dict[str, Any]  # the snapshot of its batches cleaned again from RAW
    changed_batches: dict[str, str]  # batch key -> how its listings from RAW differ from CLEAN

    @property
    def differences(self) -> list[str]:
        """What differs, one line each; empty when the version is reproduced."""
        lines = [
            f"{field}: recorded {self.recorded[field]}, from RAW {self.reproduced[field]}"
            for field in COMPARED
            if self.recorded[field] != self.reproduced[field]
        ]
        return lines + [f"batch {key}: {how}" for key, how in self.changed_batches.items()]


def recorded_snapshot(client: MlflowClient, name: str, version: str) -> dict[str, Any]:
    """The snapshot version ``version`` of ``name`` was trained on, as recorded with it."""
    model_version = client.get_model_version(name, version)
    run = client.get_run(model_version.run_id)
    training_run = run.data.tags.get("mlflow.parentRunId", run.info.run_id)
    recorded = mlflow.artifacts.load_dict(f"runs:/{training_run}/{SNAPSHOT_ARTIFACT}")
    tags = model_version.tags
    return {**recorded, "rows": int(tags["rows"]), "content_sha256": tags["snapshot_sha256"]}


def reproduce(settings: Settings, version: str) -> Reproduction:
    """Clean version ``version``'s batches again from RAW and compare with its snapshot."""
    client = MlflowClient(settings.mlflow_url)
    recorded = recorded_snapshot(client, settings.price_model_name, version)
    keys = recorded["batch_keys"]
    with connect("raw_data", settings) as raw_conn, connect("clean_data", settings) as clean_conn:
        listings = reclean_from_raw(raw_conn, clean_conn, keys)
        reproduced = snapshot(listings)
        changed = {}
        if reproduced["content_sha256"] != recorded["content_sha256"]:
            changed = _changed_batches(listings, clean_row_hashes(clean_conn, keys))
    return Reproduction(version, recorded, reproduced, changed)


def _changed_batches(from_raw: pd.DataFrame, in_clean: pd.DataFrame) -> dict[str, str]:
    """Per batch, how many listings cleaned from RAW CLEAN lacks, and the other way round."""
    changed = {}
    for key in sorted(set(from_raw["batch_key"]) | set(in_clean["batch_key"])):
        raw_hashes = set(from_raw.loc[from_raw["batch_key"] == key, "row_hash"])
        clean_hashes = set(in_clean.loc[in_clean["batch_key"] == key, "row_hash"])
        if raw_hashes != clean_hashes:
            changed[key] = (
                f"{len(raw_hashes - clean_hashes)} listings from RAW are not in CLEAN, "
                f"{len(clean_hashes - raw_hashes)} in CLEAN are not from RAW"
            )
    return changed
