"""The audit trail for auditors: CSV or JSON, streamed row by row (a trail of years stays flat in
memory). Every column of the audit table, in its order; timestamps in ISO 8601 UTC."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lifecycle.audit import runs

COLUMNS = [column.name for column in runs.columns]
JSON_COLUMNS = {column.name for column in runs.columns if isinstance(column.type, sa.JSON)}


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def as_json_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """A JSON array, one row a chunk."""
    yield "["
    for index, row in enumerate(rows):
        record = {name: _plain(row.get(name)) for name in COLUMNS}
        yield ("," if index else "") + "\n" + json.dumps(record, sort_keys=False, default=str)
    yield "\n]\n"


def as_csv_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """CSV with a header; JSON columns (holds, tenants, reasons, verification, timings) as JSON."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(COLUMNS)
    yield flush()
    for row in rows:
        writer.writerow(
            [
                json.dumps(row.get(name), default=str)
                if name in JSON_COLUMNS and row.get(name) is not None
                else _plain(row.get(name))
                for name in COLUMNS
            ]
        )
        yield flush()
