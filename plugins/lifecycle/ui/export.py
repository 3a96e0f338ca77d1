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
its counts here but given beside them, in `settled_later` (JSON: records, batches, settlements).

The whole trail is tens of thousands of rows of some forty cells: each row is read once into a
tuple and its cells are put in place by a plan made once (`_Plan`); a timestamp's local time
comes from its UTC text and its zone's offset, looked up once per UTC hour; a CSV line is
joined by hand and kept only when csv.writer would have written the same (no cell to quote,
none a spreadsheet would run), else the row takes the careful path: the cell rules above and
csv.writer, one cell at a time. Same bytes either way (tests/ui/test_export_output.py).
Rows are lifecycle.audit.iter_runs' dicts, or, cheaper to read, `stored_rows`' tuples (JSON
and SQLite's timestamps as stored text, each distinct one parsed once)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

import sqlalchemy as sa

from lifecycle.control import runs
from lifecycle.ui.zones import DEFAULT_ZONE, local, zone

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
    """The row with its `timezone` (a trail that records it wins) and local timestamps: the
    careful path's row (a row the fast path cannot vouch for)."""
    zone_name = row.get("timezone") or (zones or (lambda _: DEFAULT_ZONE))(row.get("policy", ""))
    local_times = {name + LOCAL: local(row.get(name), zone_name) for name in TIME_COLUMNS}
    return {**row, "timezone": zone_name, **local_times}


def _default_zone(_policy: str) -> str:
    return DEFAULT_ZONE


# -- the fast path -------------------------------------------------------------------------------

ZONE = "timezone"
# What a row is read into, once: lifecycle.audit.iter_runs' keys, in the table's order (a row
# of `stored_rows` is such a tuple already).
SOURCE = [*TABLE_COLUMNS, SETTLED]
_INDEX = {name: index for index, name in enumerate(SOURCE)}
_POLICY = _INDEX["policy"]
_ROW_ZONE = _INDEX.get(ZONE)  # a trail that records the zone (none does so far)
_TIME_SOURCES = [_INDEX[name] for name in TABLE_COLUMNS if name in TIME_COLUMNS]
_read = itemgetter(*SOURCE)
_run_key = itemgetter(_INDEX["dag_id"], _INDEX["run_id"], _INDEX["attempt"])
KEPT = 20_000  # entries a cache holds at most (hours of a zone, an export's JSON texts)
HOUR = timedelta(hours=1)
_MINUTES_SECONDS = [f":{minute:02}:{second:02}" for minute in range(60) for second in range(60)]
_SQLITE_TAILS = frozenset(tail + "." for tail in _MINUTES_SECONDS)  # SQLAlchemy's :MM:SS.


class _Plan:
    """Where each exported column's cell comes from, found once: the row's tuple picked into the
    columns' order (`take`), then the zone, the timestamps' UTC and local texts and the JSON
    cells put in place. Other cells are the values as read."""

    def __init__(self) -> None:
        take: list[int] = []
        self.times: list[tuple[int, int, int]] = []  # (UTC position, local position, source)
        self.time_text: list[tuple[int, int]] = []  # (position, source): `*_local`, no time's
        self.json: list[tuple[int, int, bool]] = []  # (position, source, a column of the table)
        self.zone_at = 0
        for position, name in enumerate(COLUMNS):
            base = name.removesuffix(LOCAL)
            if name == ZONE:
                self.zone_at = position
                take.append(0)  # put in place per row
            elif name.endswith(LOCAL) and base in TIME_COLUMNS:
                take.append(_INDEX[base])  # put in place with its UTC cell
            elif name in TIME_COLUMNS:
                self.times.append((position, COLUMNS.index(name + LOCAL), _INDEX[name]))
                take.append(_INDEX[name])
            elif name in JSON_COLUMNS:
                self.json.append((position, _INDEX[name], name in TABLE_COLUMNS))
                take.append(_INDEX[name])
            else:
                if name.endswith(LOCAL):
                    self.time_text.append((position, _INDEX[name]))
                take.append(_INDEX[name])
        self.take = itemgetter(*take)
        self.separators = len(COLUMNS) - 1


PLAN = _Plan()
# A UTC hour: its ISO 8601 text (`2026-11-28T23`), and the local hour's and the offset's in a
# zone (`2026-11-29T00`, `+01:00`), or None and "" (`_hour`). "" for no hour: a SQLite text
# other than SQLAlchemy's.
Hour = tuple[str, str | None, str]
_NO_HOUR: Hour = ("", None, "")
# Per zone, for the process's life (as the zones themselves, lifecycle.ui.zones.zone): a UTC
# hour by its number (proleptic ordinal * 24 + hour), and by SQLite's text `2026-11-28 23`.
_HOURS: dict[str, dict[int, Hour]] = {}
_SQLITE_HOURS: dict[str, dict[str, Hour]] = {}


def _hour(value: datetime, zone_name: str) -> Hour:
    """The UTC hour of `value` (UTC) as ISO 8601 text, `2026-11-28T23`; and, when one offset of
    whole hours holds in the zone all that hour, the local hour's text and the offset's
    (`2026-11-29T00`, `+01:00`), else None and "". tzdata has no two changes of offset within
    an hour: one that holds at the hour's first and last microsecond holds all of it."""
    start = value.replace(minute=0, second=0, microsecond=0)
    utc_hour = start.isoformat()[:13]
    place = zone(zone_name)
    try:
        first = start.astimezone(place)
        last = (start + HOUR - timedelta(microseconds=1)).astimezone(place)
    except OverflowError:  # the first or last hours a datetime holds
        return utc_hour, None, ""
    offset = first.utcoffset()
    if offset is None or offset != last.utcoffset() or offset % HOUR:
        return utc_hour, None, ""
    text = first.isoformat()  # 2026-11-29T00:00:00+01:00
    return utc_hour, text[:13], text[19:]


def _sqlite_hour(key: str, zone_name: str) -> Hour:
    """`_hour` of SQLite's text of an hour as SQLAlchemy writes it, `2026-11-28 23`; `_NO_HOUR`
    for any other text."""
    if len(key) != 13 or key[10] != " " or not key.isascii():
        return _NO_HOUR
    try:
        moment = datetime.fromisoformat(key + ":00:00+00:00")
    except ValueError:
        return _NO_HOUR
    return _hour(moment, zone_name)


def _hours_of(zone_name: str) -> tuple[dict[int, Hour], dict[str, Hour]]:
    hours, sqlite_hours = _HOURS.get(zone_name), _SQLITE_HOURS.get(zone_name)
    if hours is None:
        hours = _HOURS[zone_name] = {}
    if sqlite_hours is None:
        sqlite_hours = _SQLITE_HOURS[zone_name] = {}
    return hours, sqlite_hours


_ENCODE = json.JSONEncoder(default=str).encode  # what json.dumps(value, default=str) does


class _Unusual(TypeError):
    pass


def _unusual(value: Any) -> Any:
    raise _Unusual(type(value).__name__)


# A value JSON cannot hold as it is (a datetime, a Decimal) takes its row to the careful path:
# that writes a datetime of the row as ISO 8601, one inside a JSON value with str().
_ENCODE_PLAIN = json.JSONEncoder(default=_unusual).encode
_EMPTY_JSON: dict[type, str] = {dict: "{}", list: "[]"}


def _json_text(value: Any) -> Any:
    """The CSV cell of a JSON column's value (not None), as `_json_cell` writes it."""
    if not value and value.__class__ in _EMPTY_JSON:
        return _EMPTY_JSON[value.__class__]
    text = _ENCODE(value)
    return text if isinstance(value, int | float) else neutralised(text)


def _stored_json(value: Any) -> Any:
    """A JSON column of a stored row as lifecycle.audit reads it: its text parsed (SQLAlchemy's
    json.loads), a number as it is (SQLite's JSON holds one so)."""
    return json.loads(value) if value.__class__ is str else value


class _Rows:
    """The rows of one export, as cells: each policy's zone asked once, each UTC hour's local
    hour and offset looked up once per zone, each stored JSON text parsed once."""

    def __init__(self, zones: Zones | None) -> None:
        self.zones = zones
        self.zone_of = zones or _default_zone
        self.zone_names: dict[Any, str] = {}
        self.parsed: dict[str, Any] = {}

    def read(self, row: Any) -> tuple[Sequence[Any], str, bool] | None:
        """The row's values in `SOURCE` order, its zone, and whether it is a stored row (a tuple
        of `stored_rows`: JSON columns as text, SQLite's timestamps as text); None for a dict
        that lacks a column (a trail written by an older version, a caller's row): the careful
        path takes those."""
        stored = row.__class__ is tuple
        if stored:
            values: Sequence[Any] = row
            zone_name = None if _ROW_ZONE is None else row[_ROW_ZONE]
        else:
            try:
                values = _read(row)
            except KeyError:
                return None
            zone_name = row.get(ZONE)
        if not zone_name:
            policy = values[_POLICY]
            zone_name = self.zone_names.get(policy)
            if zone_name is None:
                zone_name = self.zone_names[policy] = self.zone_of(policy)
        return values, zone_name, stored

    def careful(self, row: Any) -> dict[str, Any]:
        """The row as the cell rules take it: `_localised`, a stored row as iter_runs reads it."""
        if row.__class__ is tuple:
            row = dict(zip(SOURCE, row, strict=True))
            for name in JSON_COLUMNS - {SETTLED}:
                row[name] = _stored_json(row[name])
            for name in TIME_COLUMNS:
                row[name] = None if row[name] is None else _aware(row[name])
        return _localised(row, self.zones)

    def parse(self, text: str) -> Any:
        """A stored JSON text parsed, once per distinct text (the export only reads it)."""
        found = self.parsed.get(text, self)
        if found is self:
            if len(self.parsed) >= KEPT:
                self.parsed.clear()
            found = self.parsed[text] = json.loads(text)
        return found

    def cells(
        self, values: Sequence[Any], zone_name: str, stored: bool, *, as_json: bool
    ) -> list[Any]:
        """The row's cells: timestamps as ISO 8601 text, UTC and local; the zone; JSON columns
        and other values as they are (`_CsvRows.line` and `as_json_lines` write those).

        The UTC text of a UTC timestamp is its hour's text and its minutes' and seconds'; its
        local text the same in the local hour and offset, when the hour has one of whole hours
        (+05:30 has not, nor an hour in which the clocks change): else `local()`, as for a
        timestamp in another zone or none. A stored row's SQLite text, as SQLAlchemy writes it
        (`2026-11-28 23:00:00.000000`, UTC), is read so without being parsed; other text is
        parsed as SQLAlchemy parses it (`_aware`)."""
        cells = list(PLAN.take(values))
        cells[PLAN.zone_at] = zone_name
        hours, sqlite_hours = _hours_of(zone_name)
        for at, local_at, source in PLAN.times:
            value = values[source]
            if value is None:
                continue
            if stored and value.__class__ is str:
                hour = sqlite_hours.get(value[:13])
                if hour is None:
                    if len(sqlite_hours) >= KEPT:
                        sqlite_hours.clear()
                    hour = sqlite_hours[value[:13]] = _sqlite_hour(value[:13], zone_name)
                micro = value[20:]
                if (
                    hour[0]
                    and value[13:20] in _SQLITE_TAILS
                    and len(micro) == 6
                    and micro.isdigit()
                    and micro.isascii()
                ):
                    tail = value[13:19] if micro == "000000" else value[13:]
                    cells[at] = hour[0] + tail + "+00:00"
                    cells[local_at] = (
                        _time_cell(local(_aware(value), zone_name))
                        if hour[1] is None
                        else hour[1] + tail + hour[2]
                    )
                    continue
                value = _aware(value)
            if value.__class__ is datetime and value.tzinfo is UTC:
                key = value.toordinal() * 24 + value.hour
                hour = hours.get(key)
                if hour is None:
                    if len(hours) >= KEPT:
                        hours.clear()
                    hour = hours[key] = _hour(value, zone_name)
                tail = _MINUTES_SECONDS[value.minute * 60 + value.second]
                if value.microsecond:
                    tail = f"{tail}.{value.microsecond:06}"
                cells[at] = hour[0] + tail + "+00:00"
                cells[local_at] = (
                    _time_cell(local(value, zone_name))
                    if hour[1] is None
                    else hour[1] + tail + hour[2]
                )
            else:
                cells[at], cells[local_at] = _time_cell(value), _time_cell(local(value, zone_name))
        for at, source in PLAN.time_text:
            cells[at] = _plain(values[source]) if as_json else _time_cell(values[source])
        return cells


Field = tuple[str, int, int]


class _CsvRows(_Rows):
    """Rows as CSV lines, each joined by hand and kept only when csv.writer would have written
    the same: JSON cells quoted here as the writer quotes them (their text never holds a line
    break: JSON escapes it); no other cell holding the separator, a quote or a line break; and
    no cell starting as a formula (a text cell would be neutralised, a negative count would not:
    either way, not this path)."""

    def __init__(self, zones: Zones | None, separator: str) -> None:
        super().__init__(zones)
        self.separator = separator
        self.guards = tuple(separator + start for start in FORMULA_STARTS)
        self.fields: dict[str, Field] = {}  # JSON cell -> (as written, separators, quotes)
        self.stored_fields: dict[str, Field] = {}  # stored JSON text -> the same

    def field(self, text: str) -> Field:
        found = self.fields.get(text)
        if found is None:
            if len(self.fields) >= KEPT:
                self.fields.clear()
            if '"' in text or self.separator in text:
                quoted = '"' + text.replace('"', '""') + '"'
                found = (quoted, quoted.count(self.separator), quoted.count('"'))
            else:
                found = (text, 0, 0)
            self.fields[text] = found
        return found

    def stored_field(self, text: str) -> Field:
        found = self.stored_fields.get(text)
        if found is None:
            if len(self.stored_fields) >= KEPT:
                self.stored_fields.clear()
            value = json.loads(text)  # JSON null (SQLAlchemy writes None so): an empty cell
            field = ("", 0, 0) if value is None else self.field(_json_text(value))
            found = self.stored_fields[text] = field
        return found

    def line(self, values: Sequence[Any], zone_name: str, stored: bool) -> str | None:
        cells = self.cells(values, zone_name, stored, as_json=False)
        separators, quotes = PLAN.separators, 0
        for at, source, in_table in PLAN.json:
            value = values[source]
            if value is None:
                continue
            if stored and in_table and value.__class__ is str:
                found = self.stored_fields.get(value)
                text, in_separators, in_quotes = found or self.stored_field(value)
            else:
                text, in_separators, in_quotes = self.field(_json_text(value))
            cells[at] = text
            separators += in_separators
            quotes += in_quotes
        separator = self.separator
        # csv.writer's cells: None empty, text as it is, anything else str()'d.
        line = separator.join(
            [cell if cell.__class__ is str else "" if cell is None else str(cell) for cell in cells]
        )
        if line.count(separator) != separators or line.count('"') != quotes:
            return None
        if "\r" in line or "\n" in line or line.startswith(FORMULA_STARTS):
            return None
        guards = self.guards  # separator + "=", "+", "-", "@", tab, CR
        if guards[1] in line or guards[2] in line:
            return None
        if ("=" in line or "@" in line or "\t" in line) and any(g in line for g in guards):
            return None
        return line


Row = dict[str, Any] | tuple[Any, ...]


def as_json_lines(rows: Iterable[Row], zones: Zones | None = None) -> Iterator[str]:
    """A JSON array, a row a line, in chunks of about `CHUNK` characters. Rows are dicts as
    lifecycle.audit.iter_runs(as_stored=True) reads them, or tuples of `stored_rows`."""
    state = _Rows(zones)
    pieces, size = ["["], 1
    for index, row in enumerate(rows):
        text = None
        read = state.read(row)
        if read is not None:
            values, zone_name, stored = read
            cells = state.cells(values, zone_name, stored, as_json=True)
            if stored:
                for at, source, in_table in PLAN.json:
                    value = values[source]
                    if in_table and value.__class__ is str:
                        cells[at] = state.parse(value)
            try:
                text = _ENCODE_PLAIN(dict(zip(COLUMNS, cells, strict=True)))
            except _Unusual:
                text = None
        if text is None:
            localised = state.careful(row)
            record = {name: _plain(localised.get(name)) for name in COLUMNS}
            text = json.dumps(record, sort_keys=False, default=str)
        piece = ("," if index else "") + "\n" + text
        pieces.append(piece)
        size += len(piece)
        if size >= CHUNK:
            yield "".join(pieces)
            pieces, size = [], 0
    pieces.append("\n]\n")
    yield "".join(pieces)


def as_csv_lines(
    rows: Iterable[Row], zones: Zones | None = None, *, excel: bool = False
) -> Iterator[str]:
    """CSV with a header; JSON columns (holds, tenants, due, reasons, verification, timings) as
    JSON; every text cell, JSON ones too, neutralised against formulas. In chunks of about
    `CHUNK` characters; rows as `as_json_lines` takes them.

    `excel`: the variant a Dutch-locale Excel opens with a double click: a UTF-8 byte order mark
    (else it reads the bytes as Windows-1252) and `;`, its list separator there (a `,` puts
    every row in one cell). The counts are integers: no decimal separator to localise."""
    separator = ";" if excel else ","
    buffer = io.StringIO()
    # CRLF (RFC 4180): the writer quotes a field holding a character of its line terminator
    # only, and a bare CR left unquoted starts a new row in a spreadsheet, and a new cell a
    # formula could open.
    writer = csv.writer(buffer, lineterminator="\r\n", delimiter=separator)
    state = _CsvRows(zones, separator)

    def written(cells: list[Any]) -> str:
        writer.writerow(cells)
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    lines: list[str] = []
    size = 0
    yield ("\ufeff" if excel else "") + written(COLUMNS)
    for row in rows:
        line = None
        read = state.read(row)
        if read is not None:
            line = state.line(*read)
        if line is None:
            localised = state.careful(row)
            line = written([cell(localised.get(name)) for name, cell in CELLS])[:-2]
        lines.append(line)
        size += len(line) + 2
        if size >= CHUNK:  # a chunk of rows at a time: one hop per chunk, not per row
            lines.append("")
            yield "\r\n".join(lines)
            lines, size = [], 0
    if lines:
        lines.append("")
        yield "\r\n".join(lines)


# -- reading the trail for an export -------------------------------------------------------------


def stored_rows(
    engine: sa.Engine,
    policy: str | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    chunk: int = 1000,
) -> Iterator[tuple[Any, ...]]:
    """The rows lifecycle.audit.iter_runs(..., as_stored=True) reads (the same filter, order and
    values, what a later run settled in `settled_later`), each a tuple of `SOURCE` for the
    exports above, but for the JSON columns, their text as the database holds it (the export
    parses each distinct text once), and SQLite's timestamps, their text (the export reads
    SQLAlchemy's own without parsing it). What iter_runs spends on a row is mostly parsing
    JSON and timestamps: most of the whole trail's export."""
    from lifecycle.audit import _filtered, _present, settled_later

    with engine.connect() as conn:
        columns = _present(conn)
        if columns is None:
            return
        settled = settled_later(conn, None if policy is None else [policy])
        dialect = engine.dialect.name
        query = sa.select(*(_as_stored(column, dialect) for column in columns))
        query = query.order_by(runs.c.logical_date, runs.c.id)
        query = _filtered(query, engine, policy, start, end, columns)
        complete = len(columns) == len(TABLE_COLUMNS)
        positions = [_INDEX[column.name] for column in columns]
        naive_ones = dialect != "sqlite"  # MariaDB's are all naive; SQLite's are text
        for row in conn.execution_options(yield_per=chunk).execute(query):
            values = list(row) if complete else _spread(row, positions)
            if naive_ones:
                for index in _TIME_SOURCES:
                    value = values[index]
                    if value is not None and not value.tzinfo:
                        values[index] = _aware(value)
            found = settled.get(_run_key(values))
            values.append(
                None
                if found is None
                else {"records": found[0], "batches": found[1], "settlements": found[2]}
            )
            yield tuple(values)


def _as_stored(column: sa.Column[Any], dialect: str) -> sa.ColumnElement[Any]:
    """A JSON column's text (PostgreSQL: cast, else the value unparsed); on SQLite a timestamp's
    text (`_aware` parses it); any other column as SQLAlchemy reads it."""
    if isinstance(column.type, sa.JSON):
        if dialect == "postgresql":
            return sa.cast(column, sa.Text).label(column.name)
        return sa.type_coerce(column, sa.Text).label(column.name)
    if isinstance(column.type, sa.DateTime) and dialect == "sqlite":
        return sa.type_coerce(column, sa.String).label(column.name)
    return column


def _spread(row: Sequence[Any], positions: list[int]) -> list[Any]:
    """A row of a trail written by an older version: the columns it lacks are None."""
    values: list[Any] = [None] * len(TABLE_COLUMNS)
    for position, value in zip(positions, row, strict=True):
        values[position] = value
    return values


def _aware(value: Any) -> Any:
    """A timestamp as iter_runs reads it: SQLite's text parsed as SQLAlchemy parses it
    (datetime.fromisoformat), a naive one in UTC."""
    if value.__class__ is str:
        try:  # SQLAlchemy writes no offset: the text's fields, in UTC
            parsed = datetime.fromisoformat(value + "+00:00")
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is UTC:
            return parsed
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(value)  # an offset of its own, a date alone, or a fault
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


CHUNK = 256 * 1024


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
