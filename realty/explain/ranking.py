"""Features ranked by mean |SHAP| with their direction; rankings as JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from realty.explain.results import Explanation, FeatureRank, Ranking, is_numeric

RANKING_SCHEMA = "realty.explain.ranking/1"
DIRECTION_MIN_CORRELATION = 0.2
"""|Spearman rho| between a numeric feature and its SHAP values below which its direction is 0."""


def rank_features(
    names: Sequence[str],
    values: np.ndarray,
    sample: pd.DataFrame,
    categorical: frozenset[str],
    base: float,
    method: str,
    output: str,
) -> Ranking:
    mean_abs = np.abs(values).mean(axis=0)
    mean = values.mean(axis=0)
    order = sorted(range(len(names)), key=lambda j: (-mean_abs[j], names[j]))
    items = []
    for rank, j in enumerate(order, start=1):
        name = names[j]
        numeric = name not in categorical and is_numeric(sample[name])
        rho = _spearman(sample[name], values[:, j]) if numeric else None
        direction = None
        if rho is not None:
            direction = 0 if abs(rho) < DIRECTION_MIN_CORRELATION else int(np.sign(rho))
        items.append(
            FeatureRank(
                feature=name,
                rank=rank,
                mean_abs_shap=float(mean_abs[j]),
                mean_shap=float(mean[j]),
                kind="numeric" if numeric else "categorical",
                direction=direction,
                correlation=rho,
            )
        )
    return Ranking(tuple(items), float(base), int(values.shape[0]), method, output)


def _spearman(x: pd.Series, shap_values: np.ndarray) -> float:
    """Spearman rho of a feature's values and its SHAP values (0 when undefined)."""
    values = pd.to_numeric(x, errors="coerce").to_numpy(dtype=float)
    keep = np.isfinite(values)
    if keep.sum() < 3:
        return 0.0
    a = pd.Series(values[keep]).rank().to_numpy()
    b = pd.Series(shap_values[keep]).rank().to_numpy()
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def ranking_to_dict(ranking: Ranking | Explanation) -> dict[str, Any]:
    """A JSON-ready dict (``json.dumps`` works; NaN becomes null)."""
    if isinstance(ranking, Explanation):
        ranking = ranking.ranking
    return {
        "schema": RANKING_SCHEMA,
        "method": ranking.method,
        "output": ranking.output,
        "rows": ranking.rows,
        "base_value": _finite_or_none(ranking.base_value),
        "features": [
            {
                "feature": item.feature,
                "rank": item.rank,
                "mean_abs_shap": item.mean_abs_shap,
                "mean_shap": item.mean_shap,
                "kind": item.kind,
                "direction": item.direction,
                "correlation": _finite_or_none(item.correlation),
            }
            for item in ranking.features
        ],
    }


def ranking_from_dict(data: Mapping[str, Any]) -> Ranking:
    """Read back ``ranking_to_dict`` output (e.g. a previous version's ranking.json)."""
    if not isinstance(data, Mapping) or data.get("schema") != RANKING_SCHEMA:
        schema = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(f"not a {RANKING_SCHEMA} ranking (schema: {schema!r})")
    try:
        items = tuple(
            FeatureRank(
                feature=str(item["feature"]),
                rank=int(item["rank"]),
                mean_abs_shap=float(item["mean_abs_shap"]),
                mean_shap=float(item["mean_shap"]),
                kind=item["kind"],
                direction=None if item.get("direction") is None else int(item["direction"]),
                correlation=None if item.get("correlation") is None else float(item["correlation"]),
            )
            for item in data["features"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed ranking: {exc!r}") from exc
    base = data.get("base_value")
    return Ranking(
        features=tuple(sorted(items, key=lambda item: item.rank)),
        base_value=float("nan") if base is None else float(base),
        rows=int(data.get("rows", 0)),
        method=str(data.get("method", "")),
        output=str(data.get("output", "model output")),
    )


def ranking_to_json(ranking: Ranking | Explanation) -> str:
    return json.dumps(ranking_to_dict(ranking), indent=2, allow_nan=False)


def ranking_from_json(text: str | bytes) -> Ranking:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"ranking is not valid JSON: {exc}") from exc
    return ranking_from_dict(data)


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def as_ranking(value: Ranking | Explanation | Mapping[str, Any] | None) -> Ranking | None:
    if value is None or isinstance(value, Ranking):
        return value
    if isinstance(value, Explanation):
        return value.ranking
    return ranking_from_dict(value)
