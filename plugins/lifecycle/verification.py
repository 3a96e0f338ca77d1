"""Proof with Great Expectations that nothing past the retention window remains.

The expectation is pushed down to the store: GX runs our query in the database and only a count
comes back, never records. Great Expectations is imported here, inside the task, never at DAG
parse time (the import alone costs seconds).
"""

from __future__ import annotations

import functools
import hashlib
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


@functools.cache
def _context():
    """One ephemeral GX context per process (a task runs one verification; tests run many)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def _source(url: str, engine_kwargs: dict[str, Any]):
    """The GX data source of a database, reused per URL within the process."""
    context = _context()
    name = "store-" + hashlib.sha256(url.encode()).hexdigest()[:16]
    try:
        return context.data_sources.get(name)
    except KeyError:
        return context.data_sources.add_sql(name=name, connection_string=url, kwargs=engine_kwargs)


def verify_sql(
    *, url: str, engine_kwargs: dict[str, Any], expired_query: str, label: str, held: int = 0
) -> Verification:
    """Validate that `expired_query` (the unheld expired records) returns no row.

    GX pushes one `SELECT count(*) FROM (<expired_query>)` down to the database; the observed
    value is that count. `expired_query` must select a constant, never a column, so nothing
    personal can reach the result even when it fails.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    # GX suggests its dialect-specific sources; the generic one serves every SQLAlchemy URL.
    warnings.filterwarnings("ignore", message="You are using a generic SQLDatasource")
    started = time.perf_counter()
    source = _source(url, engine_kwargs)
    asset_name = f"{label} expired"
    asset = source.add_query_asset(name=asset_name, query=expired_query)
    try:
        batch = asset.add_batch_definition_whole_table("whole").get_batch()
        suite = gx.ExpectationSuite(
            name=f"retention {label}",
            expectations=[
                gxe.ExpectTableRowCountToEqual(
                    value=0, description=f"No unheld record of {label} before the cutoff remains"
                )
            ],
        )
        result = batch.validate(suite, result_format="SUMMARY")
    finally:
        # Keep the context small: GX re-serialises its whole config on every change.
        source.delete_asset(asset_name)
    outcome = result.results[0]
    if (outcome.exception_info or {}).get("raised_exception"):
        # GX caught a database error; its message may quote held values: not repeated here.
        raise RuntimeError(
            f"{label}: the verification query failed in Great Expectations (message withheld: "
            "it can quote record values; run the check again or see the database's logs)"
        )
    remaining = int(outcome.result["observed_value"])
    summary = result.describe_dict()
    # Never the query itself: it carries the held subjects' values.
    summary["checked"] = f"records past the window, {held} holds excepted"
    return Verification(
        success=bool(result.success),
        remaining=remaining,
        seconds=round(time.perf_counter() - started, 3),
        summary=summary,
    )
