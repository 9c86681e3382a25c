"""The report of an explanation: explanation.md, ranking.json and the plots."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realty.explain.compare import ExplanationDiff, compare
from realty.explain.plots import beeswarm_png, dependence_pngs
from realty.explain.ranking import as_ranking, ranking_to_json
from realty.explain.results import Explanation, Ranking, format_number, format_signed


@dataclass(frozen=True)
class ReportFiles:
    """What ``write_report`` wrote; ``markdown`` is explanation.md's text."""

    directory: Path
    ranking_json: Path
    beeswarm_png: Path
    dependence_pngs: tuple[Path, ...]
    markdown_path: Path
    markdown: str
    diff: ExplanationDiff

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.ranking_json, self.beeswarm_png, *self.dependence_pngs, self.markdown_path)

    def markdown_with_inline_images(self) -> str:
        """explanation.md with its images as data: URIs (for Dagster MetadataValue.md)."""
        text = self.markdown
        for image in (self.beeswarm_png, *self.dependence_pngs):
            text = text.replace(f"]({image.name})", f"]({png_data_uri(image)})")
        return text


def png_data_uri(path: str | Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def write_report(
    explanation: Explanation,
    previous_ranking: Ranking | Mapping[str, Any] | None,
    directory: str | Path,
    top: int = 3,
    top_n: int = 5,
) -> ReportFiles:
    """Write ranking.json, beeswarm.png, dependence_<feature>.png and explanation.md."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    diff = compare(explanation, as_ranking(previous_ranking), top_n=top_n)
    ranking_json = directory / "ranking.json"
    ranking_json.write_text(ranking_to_json(explanation) + "\n", encoding="utf-8")
    beeswarm = beeswarm_png(explanation, directory / "beeswarm.png")
    dependence = dependence_pngs(explanation, directory, top=top)
    markdown = _report_markdown(explanation, diff, beeswarm, dependence)
    markdown_path = directory / "explanation.md"
    markdown_path.write_text(markdown, encoding="utf-8")
    return ReportFiles(
        directory, ranking_json, beeswarm, tuple(dependence), markdown_path, markdown, diff
    )


def _report_markdown(
    explanation: Explanation, diff: ExplanationDiff, beeswarm: Path, dependence: list[Path]
) -> str:
    cut = " (cut short by the time limit)" if explanation.truncated else ""
    lines = [
        "# What drives the predictions (SHAP)",
        "",
        f"{explanation.rows:,} of {explanation.rows_available:,} rows{cut}, sampled with seed "
        f"{explanation.seed}, explained with {explanation.method} in {explanation.seconds:.1f} s. "
        f"SHAP values are in {explanation.output} units; the base value (average prediction) "
        f"is {format_number(explanation.base_value)}.",
        "",
        "## Changes since the previous version",
        "",
        diff.to_markdown(),
        "",
        "## Ranking",
        "",
        "| # | feature | mean abs SHAP | mean SHAP | higher value → |",
        "|---|---|---|---|---|",
    ]
    for item in explanation.ranking:
        if item.kind == "categorical":
            effect = "categorical"
        else:
            effect = {1: "up", -1: "down", 0: "mixed"}[item.direction or 0]
            effect += f" (rho {format_signed(item.correlation)})"
        lines.append(
            f"| {item.rank} | {item.feature} | {format_number(item.mean_abs_shap)} | "
            f"{format_number(item.mean_shap)} | {effect} |"
        )
    lines += ["", f"![SHAP beeswarm]({beeswarm.name})", ""]
    lines += [f"![{p.stem}]({p.name})" for p in dependence]
    if explanation.notes:
        lines += ["", *[f"Note: {note}." for note in explanation.notes]]
    return "\n".join(lines) + "\n"
