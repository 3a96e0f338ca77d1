"""Periods set per client organisation (tenant), read from a settings table.

The table (default `client_retention_settings`) has the columns `tenant`, `policy` and `period`
(ISO 8601). One mechanism for every store: the SQL store matches a record's tenant column, the
object store a `tenants/<tenant>/` key prefix. Tenant ids identify client organisations, not
people, so they may appear in the plan and the audit trail.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from lifecycle.errors import PermanentError
from lifecycle.periods import compute_cutoff, parse_period


class TenantSettingsError(PermanentError, ValueError):
    pass


def read_tenant_periods(engine: sa.Engine, table: str, policy: str) -> dict[str, str]:
    """tenant -> period for `policy`; a bad period is an error naming the tenant and value."""
    schema, _, name = table.rpartition(".")
    settings = sa.table(
        name, sa.column("tenant"), sa.column("policy"), sa.column("period"), schema=schema or None
    )
    query = sa.select(settings.c.tenant, settings.c.period).where(settings.c.policy == policy)
    try:
        with engine.connect() as conn:
            rows = conn.execute(query).all()
    except sa.exc.DBAPIError as exc:
        raise TenantSettingsError(
            f"retention.per_tenant.table: cannot read {table!r} "
            f"(columns tenant, policy, period): {type(exc.orig).__name__}"
        ) from None
    periods: dict[str, str] = {}
    for tenant, period in rows:
        try:
            parse_period(period)
        except ValueError as exc:
            raise TenantSettingsError(
                f"{table}: tenant {tenant!r}, policy {policy!r}: period {exc}"
            ) from None
        if str(tenant) in periods:
            raise TenantSettingsError(f"{table}: tenant {tenant!r} has two periods for {policy!r}")
        periods[str(tenant)] = period
    return periods


def tenant_cutoffs(
    periods: dict[str, str], logical_date: datetime, timezone: str
) -> dict[str, datetime]:
    return {
        tenant: compute_cutoff(logical_date, period, timezone) for tenant, period in periods.items()
    }
