"""The audit trail for auditors: CSV or JSON, streamed row by row (a trail of years stays flat in
memory). Every column of the audit table, in its order, timestamps in ISO 8601 UTC; beside each
timestamp its local time (`<column>_local`, ISO 8601 with the offset) in the zone named by the
`timezone` column: the policy's, so that the 29 November run of an Amsterdam policy reads 29
November, not the 28th.

The CSV is opened in spreadsheets, and some audit text is not ours (a manual run id is whatever
its trigger typed): a text cell a spreadsheet would read as a formula is prefixed with `'`.
The JSON export keeps every value as stored.

Both carry each row as stored, with its hash chain columns (`chain_seq`, `prev_hash`,
`row_hash`), so that a third party rechecks every hash with the algorithm of `lifecycle.chain`
alone; what a later run settled for a row (batches in flight when a try ended) is not added to
its counts here but given beside them, in `settled_later` (JSON: records, batches, settlements)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lifecycle.control import runs
from lifecycle.ui.zones import DEFAULT_ZONE, local

TABLE_COLUMNS = [column.name for column in runs.columns]
TIME_COLUMNS = {c.name for c in runs.columns if isinstance(c.type, sa.DateTime)}
LOCAL = "_local"


def _with_local(names: list[str]) -> list[str]:
    """The table's columns, `timezone` before the first timestamp, each timestamp followed by its
    local time: appended names would leave the UTC and the local value screens apart."""
    out: list[str] = []
    for name in names:
        if name in TIME_COLUMNS:
            out += [] if "timezone" in out or "timezone" in names else ["timezone"]
            out += [name, name + LOCAL]
        else:
            out.append(name)
    return out


SETTLED = "settled_later"
COLUMNS = [*_with_local(TABLE_COLUMNS), SETTLED]
JSON_COLUMNS = {column.name for column in runs.columns if isinstance(column.type, sa.JSON)}
JSON_COLUMNS.add(SETTLED)
Zones = Callable[[str], str]  # policy name -> its timezone
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


def _json_cell(value: Any) -> Any:
    return None if value is None else _csv_cell(SETTLED, value)


def _time_cell(value: Any) -> Any:
    # ISO 8601 starts with a digit: nothing to neutralise.
    return value.isoformat() if isinstance(value, datetime) else neutralised(value)


def _cell_of(name: str) -> Callable[[Any], Any]:
    """Each column's CSV cell, chosen once (the whole trail is tens of thousands of rows): JSON
    columns as JSON, timestamps as ISO 8601, counts and flags as they are, text neutralised."""
    if name in JSON_COLUMNS:
        return _json_cell
    if name in TIME_COLUMNS or name.endswith(LOCAL):
        return _time_cell
    column = runs.columns.get(name)
    if column is not None and isinstance(column.type, sa.Integer | sa.Boolean):
        return lambda value: value if isinstance(value, int) else neutralised(value)
    return neutralised


CELLS = [(name, _cell_of(name)) for name in COLUMNS]


def content_disposition(filename: str) -> str:
    """An attachment header (RFC 6266) whatever went into the name: ASCII letters, digits,
    `.`, `_` and `-` only, so a quote, a CR/LF, a path separator or a character the header
    cannot carry (a 500, or a dropped connection) never reaches the response."""
    safe = FILENAME_CHARACTERS.sub("_", filename)
    safe = re.sub(r"\.{2,}", ".", safe).lstrip(".")[:150] or "export"
    return f'attachment; filename="{safe}"'


def _localised(row: dict[str, Any], zones: Zones | None) -> dict[str, Any]:
    """The row with its `timezone` (a trail that records it wins) and local timestamps."""
    zone_name = row.get("timezone") or (zones or (lambda _: DEFAULT_ZONE))(row.get("policy", ""))
    local_times = {name + LOCAL: local(row.get(name), zone_name) for name in TIME_COLUMNS}
    return {**row, "timezone": zone_name, **local_times}


def as_json_lines(rows: Iterable[dict[str, Any]], zones: Zones | None = None) -> Iterator[str]:
    """A JSON array, one row a chunk."""
    yield "["
    for index, row in enumerate(rows):
        row = _localised(row, zones)
        record = {name: _plain(row.get(name)) for name in COLUMNS}
        yield ("," if index else "") + "\n" + json.dumps(record, sort_keys=False, default=str)
    yield "\n]\n"


def as_csv_lines(
    rows: Iterable[dict[str, Any]], zones: Zones | None = None, *, excel: bool = False
) -> Iterator[str]:
    """CSV with a header; JSON columns (holds, tenants, due, reasons, verification, timings) as
    JSON; every text cell, JSON ones too, neutralised against formulas.

    `excel`: the variant a Dutch-locale Excel opens with a double click: a UTF-8 byte order mark
    (else it reads the bytes as Windows-1252) and `;`, its list separator there (a `,` puts
    every row in one cell). The counts are integers: no decimal separator to localise."""
    buffer = io.StringIO()
    # CRLF (RFC 4180): the writer quotes a field holding a character of its line terminator
    # only, and a bare CR left unquoted starts a new row in a spreadsheet, and a new cell a
    # formula could open.
    writer = csv.writer(buffer, lineterminator="\r\n", delimiter=";" if excel else ",")

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(COLUMNS)
    yield ("\ufeff" if excel else "") + flush()
    for row in rows:
        row = _localised(row, zones)
        writer.writerow([cell(row.get(name)) for name, cell in CELLS])
        if buffer.tell() >= CHUNK:  # a chunk of rows at a time: one hop per chunk, not per row
            yield flush()
    yield flush()


CHUNK = 64 * 1024


def chunked(pieces: Iterable[str], size: int = CHUNK) -> Iterator[str]:
    """Rows joined into chunks of about `size` characters: a response streamed a row a chunk
    costs a hop between threads per row (the whole trail: seconds of the 15,000 rows' export),
    and memory stays flat all the same."""
    buffer: list[str] = []
    length = 0
    for piece in pieces:
        buffer.append(piece)
        length += len(piece)
        if length >= size:
            yield "".join(buffer)
            buffer, length = [], 0
    if buffer:
        yield "".join(buffer)
