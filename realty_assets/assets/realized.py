"""Late labels and realized performance, one batch at a time: the sales a batch brings are
joined to the price predictions served before it landed (realty.labels), and what they say of
each version and role is checked against the version's validation error."""

import dagster as dg

from realty.labels import join_labels, realized_figures
from realty.store.labels import labels_of_batch, landed_at, replace_performance
from realty_assets.assets.ingest import clean_batch
from realty_assets.assets.monitoring import MONITORING_GROUP
from realty_assets.partitions import batch_partitions
from realty_assets.resources import MlflowResource, PostgresResource

REALIZED_CHECK = "realized_error_within_bounds"
ANSWERED_ROLES = ("production", "canary")  # a shadow's error is measured, never alarmed on


@dg.asset(
    partitions_def=batch_partitions,
    group_name=MONITORING_GROUP,
    kinds={"postgres"},
    deps=[clean_batch],
    check_specs=[dg.AssetCheckSpec(REALIZED_CHECK, asset="realized_performance")],
    description="The sales batch p brings, joined to the price predictions served before it "
    "landed (clean_data.price_labels), and per version and role the realized MAE, MAPE, R²(log), "
    "interval coverage, per state and price band (clean_data.realized_performance).",
)
def realized_performance(
    context: dg.AssetExecutionContext, postgres: PostgresResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    settings, key = mlflow.settings, context.partition_key
    with (
        postgres.connect("raw_data") as raw,
        postgres.connect("clean_data", autocommit=True) as clean,
    ):
        joined = join_labels(raw, clean, key, landed_at(raw, key))
        labels = labels_of_batch(clean, key)
        labels = labels[labels["model_name"] == settings.price_model_name]
        figures = {
            (version, role): realized_figures(group)
            for (version, role), group in labels.groupby(["model_version", "role"], sort=True)
        }
        replace_performance(clean, key, settings.price_model_name, figures)
    problems = _problems(figures, mlflow)
    return dg.MaterializeResult(
        metadata={
            "labels": joined,
            "sales": int((labels["label_kind"] == "sale").sum()),
            "versions": dg.MetadataValue.md(_table(figures)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=REALIZED_CHECK,
                passed=not problems,
                description="; ".join(problems) or "every judged version within its bound",
                metadata={"problems": problems},
            )
        ],
    )


def _problems(figures: dict, mlflow: MlflowResource) -> list[str]:
    """Versions whose realized MAE (log price) on enough sales is past their validation MAE by
    more than the drift threshold allows."""
    from realty.model.versions import version_metrics

    settings, client = mlflow.settings, mlflow.client()
    problems = []
    for (version, role), values in figures.items():
        if role not in ANSWERED_ROLES or values["sales"] < settings.realized_min_sales:
            continue
        validation = version_metrics(client.get_model_version(settings.price_model_name, version))
        expected = validation.get("mae_log")
        if expected and values["mae_log"] > expected * (1 + settings.drift_mae_increase):
            problems.append(
                f"v{version} ({role}): realized MAE (log) {values['mae_log']:.3f} on "
                f"{values['sales']} sales, {values['mae_log'] / expected - 1:.0%} above its "
                f"validation MAE {expected:.3f}"
            )
    return problems


def _table(figures: dict) -> str:
    lines = [
        "| version | role | sales | relistings | MAE $ | MAPE | R² (log) | coverage |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (version, role), f in figures.items():
        lines.append(
            f"| v{version} | {role} | {f['sales']} | {f['relistings']} | "
            f"{_show(f.get('mae_usd'), '${:,.0f}')} | {_show(f.get('mape'), '{:.1%}')} | "
            f"{_show(f.get('r2_log'), '{:.3f}')} | {_show(f.get('coverage'), '{:.1%}')} |"
        )
    return "\n".join(lines)


def _show(value: float | None, form: str) -> str:
    return "-" if value is None else form.format(value)
