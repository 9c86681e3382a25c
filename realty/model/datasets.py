"""A training's listings as MLflow datasets: the train and eval splits, each with the content
digest ``snapshot`` computes, logged as inputs of the runs that used them.

The digest is the split's ``content_sha256`` cut to the 36 characters MLflow stores; the full
hash of the whole snapshot (both splits, as recorded on the version) goes in the input's
``snapshot_sha256`` tag. Metrics computed on the eval split name its dataset, so MLflow links
each LoggedModel's scores to the rows they were measured on.
"""

from __future__ import annotations

from functools import cached_property

import mlflow
import pandas as pd
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.models import infer_signature
from mlflow.types.schema import ColSpec, Schema

from realty.model.training import snapshot

DIGEST_CHARS = 36  # the length of MLflow's dataset digest column
SCHEMA_ROWS = 1_000
TARGET = "price"
SOURCE = CodeDatasetSource(tags={"mlflow.source.name": "realty.model.versions.training_data"})


class ListingsDataset(PandasDataset):
    """A ``PandasDataset`` of clean listings whose schema is read from the first rows.

    ``PandasDataset`` infers its schema by looking at every value of every column, about 15 s
    for 75,000 listings, each time it is logged; clean listings have one type per column, so
    the first ``SCHEMA_ROWS`` rows give the types and a vectorised null check the ``required``
    flags. Computed once: every run of a training logs the same two datasets."""

    @cached_property
    def schema(self) -> Schema:
        inferred = infer_signature(self.df.head(SCHEMA_ROWS)).inputs
        has_nulls = self.df.isna().any()
        return Schema(
            [ColSpec(s.type, s.name, required=not has_nulls[s.name]) for s in inferred.inputs]
        )


def listings_dataset(frame: pd.DataFrame, name: str) -> ListingsDataset:
    """``frame`` (clean listings with ``row_hash``) as a dataset named ``name``, its digest the
    start of its ``snapshot`` content hash."""
    digest = snapshot(frame)["content_sha256"][:DIGEST_CHARS]
    return ListingsDataset(frame, SOURCE, targets=TARGET, name=name, digest=digest)


def log_training_inputs(
    train: ListingsDataset, evaluation: ListingsDataset, snapshot_sha256: str
) -> None:
    """Both splits as inputs of the active run (contexts ``training`` and ``evaluation``)."""
    tags = {"snapshot_sha256": snapshot_sha256}
    mlflow.log_inputs(
        datasets=[train, evaluation],
        contexts=["training", "evaluation"],
        tags_list=[tags, tags],
    )
