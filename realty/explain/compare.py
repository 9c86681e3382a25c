"""``compare``: what changed between two versions' explanations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from realty.explain.ranking import as_ranking
from realty.explain.results import Explanation, Ranking, format_number, format_signed

MATERIAL_SHARE = 0.05
"""compare() reports features whose mean |SHAP| is at least this share of the top feature's."""
MIN_RELATIVE_CHANGE = 0.10
"""compare() reports a rank change when the feature's own mean |SHAP| moved at least this much."""


@dataclass(frozen=True)
class RankChange:
    feature: str
    old_rank: int
    new_rank: int
    old_mean_abs_shap: float
    new_mean_abs_shap: float


@dataclass(frozen=True)
class SignFlip:
    feature: str
    old_direction: int
    new_direction: int
    old_correlation: float | None
    new_correlation: float | None


@dataclass(frozen=True)
class ExplanationDiff:
    """How the current ranking differs from the previous version's (None: first version)."""

    current: Ranking
    previous: Ranking | None
    top_n: int
    rank_changes: tuple[RankChange, ...] = ()
    sign_flips: tuple[SignFlip, ...] = ()
    entered_top: tuple[str, ...] = ()
    left_top: tuple[str, ...] = ()
    new_features: tuple[str, ...] = ()
    removed_features: tuple[str, ...] = ()

    @property
    def first_version(self) -> bool:
        return self.previous is None

    @property
    def changed(self) -> bool:
        return bool(
            self.rank_changes
            or self.sign_flips
            or self.entered_top
            or self.left_top
            or self.new_features
            or self.removed_features
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_version": self.first_version,
            "top_n": self.top_n,
            "rank_changes": [vars(change) for change in self.rank_changes],
            "sign_flips": [vars(flip) for flip in self.sign_flips],
            "entered_top": list(self.entered_top),
            "left_top": list(self.left_top),
            "new_features": list(self.new_features),
            "removed_features": list(self.removed_features),
        }

    def to_markdown(self) -> str:
        """A few sentences for people: what moved, what flipped, what is new."""
        top = ", ".join(
            f"{item.feature} ({format_number(item.mean_abs_shap)})"
            for item in self.current.top(self.top_n)
        )
        if self.previous is None:
            return (
                "First explained version: there is no previous ranking to compare with.\n\n"
                f"Top features by mean |SHAP|: {top}."
            )
        lines = []
        for change in self.rank_changes:
            old, new = change.old_mean_abs_shap, change.new_mean_abs_shap
            shap_move = f"mean |SHAP| {format_number(old)} → {format_number(new)}"
            if change.feature in self.entered_top:
                what = (
                    f"entered the top {self.top_n} (#{change.old_rank} → #{change.new_rank}, "
                    f"{shap_move})"
                )
            elif change.feature in self.left_top:
                what = (
                    f"dropped out of the top {self.top_n} (#{change.old_rank} → "
                    f"#{change.new_rank}, {shap_move})"
                )
            else:
                verb = "rose" if change.new_rank < change.old_rank else "fell"
                what = f"{verb} from #{change.old_rank} to #{change.new_rank} ({shap_move})"
            lines.append(f"- **{change.feature}** {what}")
        for flip in self.sign_flips:
            now = "raise" if flip.new_direction > 0 else "lower"
            before = "raised" if flip.old_direction > 0 else "lowered"
            lines.append(
                f"- **{flip.feature}**'s effect flipped sign: higher values now {now} the "
                f"prediction (they {before} it; Spearman {format_signed(flip.old_correlation)} → "
                f"{format_signed(flip.new_correlation)})"
            )
        for name in self.new_features:
            item = self.current[name]
            lines.append(
                f"- **{name}** is new in this model (#{item.rank}, mean |SHAP| "
                f"{format_number(item.mean_abs_shap)})"
            )
        for name in self.removed_features:
            assert self.previous is not None
            lines.append(f"- **{name}** is no longer used (was #{self.previous[name].rank})")
        if not lines:
            lines.append(
                f"- No change: same top-{self.top_n} order as the previous version and no "
                "feature's effect changed direction."
            )
        return "\n".join([*lines, "", f"Top features by mean |SHAP|: {top}."])


def compare(
    current: Explanation | Ranking | Mapping[str, Any],
    previous: Ranking | Explanation | Mapping[str, Any] | None,
    top_n: int = 5,
    material_share: float = MATERIAL_SHARE,
    min_change: float = MIN_RELATIVE_CHANGE,
) -> ExplanationDiff:
    """What changed between the previous version's ranking and this one.

    Only *material* features are reported: those whose mean |SHAP| is at least
    ``material_share`` (5 %) of the top feature's in either version, so reshuffles among
    negligible features stay out. For those: rank changes (so also entering or leaving the top
    ``top_n``) of features in the top ``top_n`` of either version whose own mean |SHAP| changed
    by at least ``min_change`` (10 %; sampling noise at 2,000 rows is a few percent, and a
    feature that only moved because a neighbour changed is not news), and sign flips (a clear
    direction in both versions, |Spearman rho| >= 0.2, with opposite signs). Features new to
    the model or no longer in it are always reported.
    """
    now = as_ranking(current)
    assert now is not None
    before = as_ranking(previous)
    if before is None:
        return ExplanationDiff(now, None, top_n)
    top_now = set(now.names[:top_n])
    top_before = set(before.names[:top_n])
    material = _material(now, material_share) | _material(before, material_share)
    changes = []
    flips = []
    for item in now:
        if item.feature not in before or item.feature not in material:
            continue
        old = before[item.feature]
        in_top = item.feature in top_now or item.feature in top_before
        changed = abs(item.mean_abs_shap - old.mean_abs_shap) >= min_change * old.mean_abs_shap
        if in_top and old.rank != item.rank and changed:
            changes.append(
                RankChange(item.feature, old.rank, item.rank, old.mean_abs_shap, item.mean_abs_shap)
            )
        if item.direction and old.direction and item.direction != old.direction:
            flips.append(
                SignFlip(
                    item.feature, old.direction, item.direction, old.correlation, item.correlation
                )
            )
    moved = {change.feature for change in changes}
    return ExplanationDiff(
        current=now,
        previous=before,
        top_n=top_n,
        rank_changes=tuple(changes),
        sign_flips=tuple(flips),
        entered_top=tuple(n for n in now.names[:top_n] if n not in top_before and n in moved),
        left_top=tuple(n for n in before.names[:top_n] if n not in top_now and n in moved),
        new_features=tuple(n for n in now.names if n not in before),
        removed_features=tuple(n for n in before.names if n not in now),
    )


def _material(ranking: Ranking, share: float) -> set[str]:
    if not ranking.features:
        return set()
    floor = share * ranking.features[0].mean_abs_shap
    return {item.feature for item in ranking if item.mean_abs_shap >= floor}
