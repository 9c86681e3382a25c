"""Served traffic: what the price model answered, one hourly window at a time.

Hourly because the windows then line up with the clock a person reads dashboards by, and an
hour of the platform's traffic (a batch every few minutes, its clients' requests) is enough for
stable quantiles yet still a fresh alarm. The asset reads the window's rows of
``raw_data.inference_log`` (realty/served.py), writes one profile per version to
``clean_data.served_windows`` and checks them: error rate, p99 latency, and drift of the
inputs and outputs against the version's training data.
"""

from datetime import timedelta
from typing import TYPE_CHECKING

import dagster as dg

from realty.store.served import replace_window, windows_since
from realty_assets.resources import MlflowResource, PostgresResource

if TYPE_CHECKING:
    from realty.served import ServedProfile

MONITORING_GROUP = "monitoring"
hourly_windows = dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00", timezone="UTC")
SERVED_CHECK = "served_traffic_healthy"
CHART_SPAN = timedelta(hours=23)  # the metadata's chart: this window and the 23 before


@dg.asset(
    partitions_def=hourly_windows,
    group_name=MONITORING_GROUP,
    kinds={"postgres", "mlflow"},
    check_specs=[dg.AssetCheckSpec(SERVED_CHECK, asset="served_traffic")],
    description="Per hour and model version: listings answered, error rate, latency quantiles, "
    "missing fields, and the drift of what was served (inputs, predictions) against the "
    "version's training data (clean_data.served_windows).",
)
def served_traffic(
    context: dg.AssetExecutionContext, postgres: PostgresResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    from realty.served import served_window

    settings = mlflow.settings
    start = context.partition_time_window.start
    with postgres.connect("raw_data") as raw:
        profiles = served_window(settings, raw, mlflow.client(), start, start + timedelta(hours=1))
    with postgres.connect("clean_data", autocommit=True) as clean:
        replace_window(clean, start, settings.price_model_name, [p.to_dict() for p in profiles])
        recent = windows_since(clean, settings.price_model_name, start - CHART_SPAN)
    problems = [p for profile in profiles for p in problems_of(profile, settings)]
    return dg.MaterializeResult(
        metadata={
            "listings": sum(p.listings for p in profiles),
            "versions": [p.version for p in profiles],
            "window": dg.MetadataValue.md(_table(profiles)),
            "last_day": dg.MetadataValue.md(_chart(recent)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=SERVED_CHECK,
                passed=not problems,
                description="; ".join(problems) or "every served version within its limits",
                metadata={"problems": problems},
            )
        ],
    )


def problems_of(profile: "ServedProfile", settings) -> list[str]:
    """What is wrong with a version's window (nothing on fewer listings than drift needs)."""
    where = f"v{profile.version}"
    problems = []
    if profile.error_rate > settings.monitoring_max_error_rate:
        problems.append(f"{where}: error rate {profile.error_rate:.1%}")
    p99 = profile.latency_ms.get("p99")
    if p99 is not None and p99 > settings.monitoring_max_p99_ms:
        problems.append(f"{where}: p99 latency {p99:.0f} ms")
    if profile.drift.retrain:
        problems += [f"{where}: {reason}" for reason in profile.drift.reasons]
    return problems


def _table(profiles: "list[ServedProfile]") -> str:
    lines = [
        "| version | listings | error rate | p50 ms | p99 ms | median price | drift |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in profiles:
        median, latency = p.predictions.get("p50"), p.latency_ms
        lines.append(
            f"| v{p.version} | {p.listings} | {p.error_rate:.1%} | "
            f"{latency.get('p50', float('nan')):.1f} | {latency.get('p99', float('nan')):.1f} | "
            f"{'-' if median is None else f'${median:,.0f}'} | "
            f"{'; '.join(p.drift.reasons) or 'none'} |"
        )
    return "\n".join(lines)


def _chart(windows) -> str:
    """The day's windows as a chart, inline in the metadata's markdown (a PNG data URL)."""
    from realty.served_chart import figure_png_base64, served_figure  # matplotlib: seconds

    return f"![served traffic](data:image/png;base64,{figure_png_base64(served_figure(windows))})"


served_traffic_job = dg.define_asset_job(
    "served_traffic_job",
    selection=[served_traffic],
    description="Profile one hour of served traffic.",
)
served_traffic_schedule = dg.build_schedule_from_partitioned_job(
    served_traffic_job,
    minute_of_hour=5,  # the hour's last rows are written within seconds of it
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
