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
import sys
import time
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from lifecycle.stores import Verification

if TYPE_CHECKING:
    from great_expectations.data_context import EphemeralDataContext
    from great_expectations.datasource.fluent.pandas_datasource import PandasDatasource
    from great_expectations.datasource.fluent.sql_datasource import SQLDatasource

# GX sends usage analytics by default; a retention job must not phone home.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# GX logs internals at INFO on every validation; the task log keeps our own summary instead.
logging.getLogger("great_expectations").setLevel(logging.WARNING)
log = logging.getLogger(__name__)


def load() -> None:
    """Import Great Expectations, saying what it cost: nothing where the Celery worker loaded it
    before forking the task process (`lifecycle.worker`), else seconds, once per process."""
    if "great_expectations" in sys.modules:
        log.info(
            "Great Expectations: already loaded in this process (by the worker before it "
            "forked the task, or by an earlier verification in it)"
        )
        return
    started = time.perf_counter()
    import great_expectations
    import great_expectations.expectations  # noqa: F401

    log.info(
        "Great Expectations: loaded in %.1f s (a worker with celery_config_options = "
        "lifecycle.worker.CELERY_CONFIG loads it once for all its tasks)",
        time.perf_counter() - started,
    )


@functools.cache
def _context() -> EphemeralDataContext:
    """One ephemeral GX context per process (a task runs one verification; tests run many)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def _source(url: str, engine_kwargs: dict[str, Any]) -> SQLDatasource:
    """The GX data source of a database, reused per URL within the process."""
    context = _context()
    name = "store-" + hashlib.sha256(url.encode()).hexdigest()[:16]
    try:
        return cast("SQLDatasource", context.data_sources.get(name))  # added below, by add_sql
    except KeyError:
        # `kwargs` is a field of SQLDatasource (create_engine's arguments) its signature omits.
        return context.data_sources.add_sql(  # type: ignore[call-arg]
            name=name, connection_string=url, kwargs=engine_kwargs
        )


def _raised(exception_info: Any) -> bool:
    """GX reports a failed metric as {"raised_exception": True, ...}, or one such dict per
    metric, instead of raising."""
    if not exception_info:
        return False
    if "raised_exception" in exception_info:
        return bool(exception_info["raised_exception"])
    return any(_raised(info) for info in exception_info.values() if isinstance(info, dict))


def verify_sql(
    *,
    url: str,
    engine_kwargs: dict[str, Any],
    expired_query: str,
    label: str,
    held: int = 0,
    expected: int = 0,
) -> Verification:
    """Validate that `expired_query` (the records past the window) returns exactly `expected`
    rows: the held ones, counted by the store with the hold values bound as parameters, so
    the query GX runs needs none of them.

    GX pushes one `SELECT count(*) FROM (<expired_query>)` down to the database; the observed
    value is that count. `expired_query` must select a constant, never a column, so nothing
    personal can reach the result even when it fails.
    """
    load()  # before the imports below: says what the import cost this task
    import great_expectations as gx
    import great_expectations.expectations as gxe

    # GX suggests its dialect-specific sources; the generic one serves every SQLAlchemy URL.
    warnings.filterwarnings("ignore", message="You are using a generic SQLDatasource")
    started = time.perf_counter()
    source = _source(url, engine_kwargs)
    asset_name = f"{label} expired"
    asset = source.add_query_asset(name=asset_name, query=expired_query)
    try:
        # The whole query, asked directly: a batch definition added to the asset would be one
        # more re-serialisation of the context's config (~7 ms each, most of GX's fixed cost).
        batch = asset.get_batch(asset.build_batch_request())
        suite = gx.ExpectationSuite(
            name=f"retention {label}",
            expectations=[
                gxe.ExpectTableRowCountToEqual(
                    value=expected,
                    description=f"No unheld record of {label} before the cutoff remains "
                    f"(records past the window = the {expected} held)",
                )
            ],
        )
        result = batch.validate(suite, result_format="SUMMARY")
    finally:
        # Keep the context small: GX re-serialises its whole config on every change.
        source.delete_asset(asset_name)
    observed = _observed_count(result, label)
    remaining = max(0, observed - expected)
    summary = result.describe_dict()
    summary["checked"] = (
        f"records past the window: {observed}, of them held (by {held} holds): {expected}"
    )
    return Verification(
        success=bool(result.success),
        remaining=remaining,
        seconds=round(time.perf_counter() - started, 3),
        summary=summary,
    )


def _observed_count(result: Any, label: str) -> int:
    """The row count GX observed; a database error GX caught is raised without its message,
    which may quote held values."""
    outcome = result.results[0]
    if _raised(outcome.exception_info) or "observed_value" not in (outcome.result or {}):
        raise RuntimeError(
            f"{label}: the verification query failed in Great Expectations (message withheld: "
            "it can quote record values; run the check again or see the database's logs)"
        )
    return int(outcome.result["observed_value"])


def verify_inventory(
    chunks: Iterable[list[float | None]],
    *,
    label: str,
    held: int = 0,
    unit: str = "versions",
    also_excepted: str = " and Object Lock",
) -> Verification:
    """Validate an inventory (an object store's versions, a directory's files), chunk by chunk
    (bounded memory): every value of `seconds_past_cutoff` (one per remaining unheld item; None
    where held or unreadable) must be >= 0. Only numbers reach GX: no key, no path, no
    content. `unit` names the items in the summary; `also_excepted`, what else keeps one."""
    load()
    import great_expectations as gx
    import great_expectations.expectations as gxe
    import pandas as pd

    started = time.perf_counter()
    context = _context()
    try:
        source = cast("PandasDatasource", context.data_sources.get("inventory"))  # by add_pandas
    except KeyError:
        source = context.data_sources.add_pandas(name="inventory")
    try:
        asset = source.get_asset("versions")
    except LookupError:
        asset = source.add_dataframe_asset(name="versions")
    try:
        batch_definition = asset.get_batch_definition("chunk")
    except KeyError:
        batch_definition = asset.add_batch_definition_whole_dataframe("chunk")
    suite = gx.ExpectationSuite(
        name=f"retention {label}",
        expectations=[
            gxe.ExpectColumnValuesToBeBetween(
                column="seconds_past_cutoff",
                min_value=0,
                description=f"No unheld {unit.rstrip('s')} of {label} past the window remains",
            )
        ],
    )
    success, remaining, checked, chunk_count = True, 0, 0, 0
    for values in chunks:
        frame = pd.DataFrame({"seconds_past_cutoff": pd.Series(values, dtype="float64")})
        result = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(
            suite, result_format="SUMMARY"
        )
        outcome = result.results[0]
        if _raised(outcome.exception_info) or "unexpected_count" not in (outcome.result or {}):
            raise RuntimeError(f"{label}: the inventory validation failed in Great Expectations")
        success = success and bool(result.success)
        remaining += int(outcome.result["unexpected_count"])
        checked += len(values)
        chunk_count += 1
    return Verification(
        success=success,
        remaining=remaining,
        seconds=round(time.perf_counter() - started, 3),
        summary={
            "success": success,
            "expectation": "expect_column_values_to_be_between(seconds_past_cutoff, min 0)",
            "versions_checked": checked,  # the key's first name: items of any kind
            "unit": unit,
            "chunks": chunk_count,
            "remaining": remaining,
            "checked": f"{unit} past the window, {held} holds{also_excepted} excepted",
        },
    )
