"""RAW and CLEAN batch assets: one materialization per delivered batch."""

from itertools import islice

import dagster as dg
import pandas as pd

from realty.ingest.landing import ensure_rows
from realty.ingest.quality import CHECK_NAMES, run_checks
from realty.schema import LISTING_COLUMNS
from realty.store.clean import BatchAccount, clean_landed_batch
from realty_assets.partitions import batch_partitions
from realty_assets.resources import PostgresResource

INGEST_GROUP = "ingest"
# A batch whose CLEAN rows do not have the schema, or do not add up to its RAW rows, stops here:
# its run fails before drift_report, so no verdict, training or scoring sees it.
BLOCKING_CHECKS = ("schema", "reconciliation")


@dg.asset(
    partitions_def=batch_partitions,
    group_name=INGEST_GROUP,
    kinds={"postgres"},
    description="The rows of a delivered batch as text, exactly as the data API sent them "
    "(raw_data.raw_listings; text PostgreSQL cannot store, NUL and lone surrogates, as U+FFFD), "
    "landed with the payload (raw_data.raw_batches) in one transaction; re-spread from the "
    "payload if any row is missing.",
)
def raw_batch(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> dg.MaterializeResult:
    key = context.partition_key
    with postgres.connect("raw_data") as conn:
        rows = ensure_rows(conn, key)
    batch = rows.batch
    preview = pd.DataFrame(islice(batch.delivered_rows(), 5), columns=list(LISTING_COLUMNS))
    return dg.MaterializeResult(
        metadata={
            "batch_number": batch.batch_number,
            "dagster/row_count": len(batch.data),
            "malformed_rows": len(batch.malformed),
            "sanitized_values": batch.sanitized,  # NUL and lone surrogates, now U+FFFD
            "respread": rows.respread,
            "preview": dg.MetadataValue.md(
                preview.to_markdown(index=False) if len(preview) else "_empty batch_"
            ),
        }
    )


def _reject_rate(account: BatchAccount) -> float:
    return account.rejected_rows / max(account.raw_rows, 1)


def _summary_markdown(account: BatchAccount) -> str:
    lines = [
        f"**{account.key}**: {account.raw_rows:,} raw rows → {account.clean_rows:,} clean, "
        f"{account.rejected_rows:,} rejected ({_reject_rate(account):.1%}).",
        "",
        "| reject reason | rows |",
        "|---|---:|",
        *(
            f"| {reason} | {count:,} |"
            for reason, count in sorted(account.rejects_by_reason.items())
        ),
    ]
    return "\n".join(lines)


def _null_fraction_table(account: BatchAccount) -> dg.TableMetadataValue:
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({"column": column, "null_fraction": fraction})
            for column, fraction in account.null_fractions.items()
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("column", "string"),
                dg.TableColumn("null_fraction", "float"),
            ]
        ),
    )


@dg.asset(
    partitions_def=batch_partitions,
    group_name=INGEST_GROUP,
    kinds={"postgres"},
    deps=[raw_batch],
    check_specs=[
        dg.AssetCheckSpec(name, asset="clean_batch", blocking=name in BLOCKING_CHECKS)
        for name in CHECK_NAMES
    ],
    description="Typed, validated listings of a batch (clean_data.clean_listings); every "
    "rejected row is kept with its reason in clean_data.rejected_listings.",
)
def clean_batch(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> dg.MaterializeResult:
    key = context.partition_key
    with postgres.connect("raw_data") as raw_conn, postgres.connect("clean_data") as clean_conn:
        account = clean_landed_batch(raw_conn, clean_conn, key)
        outcomes = run_checks(raw_conn, clean_conn, key)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": account.clean_rows,
            "raw_rows": account.raw_rows,
            "clean_rows": account.clean_rows,
            "rejected_rows": account.rejected_rows,
            "reject_rate": round(_reject_rate(account), 4),
            "rejects_by_reason": account.rejects_by_reason,
            "null_fractions": _null_fraction_table(account),
            "summary": dg.MetadataValue.md(_summary_markdown(account)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=outcome.name,
                passed=outcome.passed,
                description=outcome.description,
                metadata=outcome.metadata,
                severity=dg.AssetCheckSeverity.WARN
                if outcome.name == "null_fractions"
                else dg.AssetCheckSeverity.ERROR,
            )
            for outcome in outcomes
        ],
    )
