"""Proof with Great Expectations that nothing past the retention window remains.

The expectation is pushed down to the store: GX runs our query in the database and only a count
comes back, never records. Great Expectations is imported here, inside the task, never at DAG
parse time (the import alone costs seconds).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Any

from lifecycle.stores import Verification

# GX sends usage analytics by default; a retention job must not phone home.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# GX logs internals at INFO on every validation; the task log keeps our own summary instead.
logging.getLogger("great_expectations").setLevel(logging.WARNING)


def verify_sql(
    *,
    url: str,
    engine_kwargs: dict[str, Any],
    table: str,
    schema: str | None,
    remaining_query: str,
    label: str,
) -> Verification:
    """Validate that `remaining_query` (a COUNT over `{batch}`, HAVING COUNT(*) > 0) is empty.

    `remaining_query` must select only a count, so the validation result holds no personal data.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX suggests its dialect-specific sources; the generic one serves every SQLAlchemy URL.
    warnings.filterwarnings("ignore", message="You are using a generic SQLDatasource")
    started = time.perf_counter()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_sql(name="store", connection_string=url, kwargs=engine_kwargs)
    asset = source.add_table_asset(name=label, table_name=table, schema_name=schema)
    batch = asset.add_batch_definition_whole_table("whole table")
    expectation = gxe.UnexpectedRowsExpectation(
        unexpected_rows_query=remaining_query,
        description=f"No unheld record of {label} before the cutoff remains",
    )
    suite = context.suites.add(gx.ExpectationSuite(name=label, expectations=[expectation]))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=label, data=batch, suite=suite)
    )
    result = definition.run(result_format="COMPLETE")
    outcome = result.results[0].result
    rows = outcome.get("details", {}).get("unexpected_rows") or []
    remaining = int(rows[0]["remaining"]) if rows else 0
    summary = result.describe_dict()
    summary["remaining"] = remaining
    return Verification(
        success=bool(result.success),
        remaining=remaining,
        seconds=round(time.perf_counter() - started, 3),
        summary=summary,
    )
