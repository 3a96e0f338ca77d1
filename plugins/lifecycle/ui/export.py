"""The audit trail for auditors: CSV or JSON, streamed row by row (a trail of years stays flat in
memory). Every column of the audit table, in its order; timestamps in ISO 8601 UTC.

The CSV is opened in spreadsheets, and some audit text is not ours (a manual run id is whatever
its trigger typed): a text cell a spreadsheet would read as a formula is prefixed with `'`.
The JSON export keeps every value as stored."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lifecycle.control import runs

COLUMNS = [column.name for column in runs.columns]
JSON_COLUMNS = {column.name for column in runs.columns if isinstance(column.type, sa.JSON)}
# OWASP's CSV injection list: what makes Excel, LibreOffice or Sheets start a formula (or, for
# tab and CR, hides the character that would).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
FILENAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def neutralised(cell: Any) -> Any:
    """A text cell as a spreadsheet shows it, never run: `'=1+1` displays `=1+1`. Numbers,
    booleans and empty cells stay as they are (the trail's counts are never negative)."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def _csv_cell(name: str, value: Any) -> Any:
    if name in JSON_COLUMNS and value is not None:
        text = json.dumps(value, default=str)
        # A JSON string, list or object is text whose first character a spreadsheet reads too.
        return text if isinstance(value, int | float) else neutralised(text)
    return neutralised(_plain(value))


def content_disposition(filename: str) -> str:
    """An attachment header (RFC 6266) whatever went into the name: ASCII letters, digits,
    `.`, `_` and `-` only, so a quote, a CR/LF, a path separator or a character the header
    cannot carry (a 500, or a dropped connection) never reaches the response."""
    safe = FILENAME_CHARACTERS.sub("_", filename)
    safe = re.sub(r"\.{2,}", ".", safe).lstrip(".")[:150] or "export"
    return f'attachment; filename="{safe}"'


def as_json_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """A JSON array, one row a chunk."""
    yield "["
    for index, row in enumerate(rows):
        record = {name: _plain(row.get(name)) for name in COLUMNS}
        yield ("," if index else "") + "\n" + json.dumps(record, sort_keys=False, default=str)
    yield "\n]\n"


def as_csv_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """CSV with a header; JSON columns (holds, tenants, reasons, verification, timings) as JSON;
    every text cell, JSON ones too, neutralised against formulas."""
    buffer = io.StringIO()
    # CRLF (RFC 4180): the writer quotes a field holding a character of its line terminator
    # only, and a bare CR left unquoted starts a new row in a spreadsheet, and a new cell a
    # formula could open.
    writer = csv.writer(buffer, lineterminator="\r\n")

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(COLUMNS)
    yield flush()
    for row in rows:
        writer.writerow([_csv_cell(name, row.get(name)) for name in COLUMNS])
        yield flush()
