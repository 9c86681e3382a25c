"""A model's error against what its validation expects: on a new batch, whose prices arrive
with it (``PerformanceDrift``), and on the sales of listings it priced, which arrive later
(``RealizedError``, realty/labels.py). The drift verdict (realty/drift.py) turns both into
reasons."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SEEN_ZIP_MAE, UNSEEN_ZIP_MAE = "mae_log_seen_zip", "mae_log_unseen_zip"  # model.training.zip_errors


@dataclass(frozen=True)
class PerformanceDrift:
    """The production model's metrics on this batch and on its own validation set."""

    batch: Mapping[str, float]
    validation: Mapping[str, float]
    drifted: bool = False  # set by drift_report
    unseen_zip_share: float | None = None  # of the batch's rows; set by drift_report

    @property
    def expected(self) -> dict[str, float]:
        """The validation metrics, ``mae_log`` the mix of the errors on seen and unseen zip
        codes at this batch's unseen share (a random eval split is mostly known places)."""
        seen, unseen = self.validation.get(SEEN_ZIP_MAE), self.validation.get(UNSEEN_ZIP_MAE)
        if (share := self.unseen_zip_share) is None or seen is None or unseen is None:
            return dict(self.validation)
        return {**self.validation, "mae_log": (1 - share) * seen + share * unseen}

    @property
    def change(self) -> dict[str, float]:
        """Relative change per metric both sides name: (batch - expected) / |expected|."""
        return {
            name: (float(self.batch[name]) - value) / abs(value)
            for name, value in self.expected.items()
            if name in self.batch and value and math.isfinite(value)
        }

    @property
    def metric(self) -> str | None:
        """The MAE the verdict watches: in log price if given, else in dollars. Dollar MAE is
        ruled by the few multi-million listings, so on a batch it swings with them alone."""
        return next((name for name in ("mae_log", "mae_usd") if name in self.change), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": dict(self.batch),
            "validation": dict(self.validation),
            "expected": self.expected,
            "unseen_zip_share": self.unseen_zip_share,
            "change": self.change,
            "metric": self.metric,
            "drifted": self.drifted,
        }


@dataclass(frozen=True)
class RealizedError:
    """Production's error on the sales of listings it priced (late labels, realty/labels.py)
    against its validation error, both MAE in log price."""

    sales: int
    mae_log: float
    validation_mae_log: float
    drifted: bool = False  # set by drift_report

    @property
    def change(self) -> float:
        return self.mae_log / self.validation_mae_log - 1

    def sentence(self) -> str:
        side = "above" if self.change >= 0 else "below"
        return (
            f"production's realized MAE (log price) on {self.sales:,} labelled sales is "
            f"{abs(self.change):.0%} {side} its validation MAE ({self.mae_log:.3f} vs "
            f"{self.validation_mae_log:.3f})"
        )


def evidence(report: dict[str, Any]) -> list[str]:
    """What a stored report (``DriftReport.to_dict()``) says below its thresholds, for a retrain
    that is not for drift (freshness): production's realized error and the largest PSI."""
    said = []
    if realized := report.get("realized"):
        said.append(RealizedError(**{**realized, "drifted": False}).sentence())
    features = [f for f in report.get("features") or [] if f.get("psi") is not None]
    if top := max(features, key=lambda f: f["psi"], default=None):
        said.append(f"largest drift since the reference: {top['feature']} PSI {top['psi']:.3f}")
    return said
