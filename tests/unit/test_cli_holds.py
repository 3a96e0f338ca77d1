"""`lifecycle holds` on a SQLite control database: what a privacy officer types, what is refused
and what is printed (a held value is personal data; a note is whatever its author typed)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from lifecycle import cli
from lifecycle.holds import holds
from tests.conftest import PROJECT

PHONE = "+31 6 12345678"
HELD = ("+31612345678", "612345678", "12345678")  # the value, canonical or in parts
PLACE = ["holds", "place", "--scope", "cdrs", "--subject", "phone", "--reason", "restriction"]


@pytest.fixture
def control_db(tmp_path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("AIRFLOW_CONN_LIFECYCLE_AUDIT", url)
    monkeypatch.setenv("LIFECYCLE_POLICY_DIR", str(PROJECT / "include/policies"))
    assert cli.main(["audit-init"]) == 0  # as the owner, once
    return url


def _rows(url: str) -> list[dict]:
    engine = sa.create_engine(url)
    try:
        if not sa.inspect(engine).has_table(holds.name):
            return []
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(sa.select(holds))]
    finally:
        engine.dispose()


def _place(*extra: str, value: str = PHONE, by: str = "A. de Vries (FG)") -> int:
    return cli.main([*PLACE, "--value", value, "--by", by, *extra])


def _assert_value_not_shown(capsys, held=HELD) -> None:
    out, err = capsys.readouterr()
    assert err.startswith("hold"), err  # refused, and said so
    for part in held:
        assert part not in out + err, (out, err)


def test_release_needs_someone_who_releases(control_db, capsys):
    assert _place() == 0
    (hold,) = _rows(control_db)
    capsys.readouterr()
    for blank in (" ", "", "\t\n"):
        assert cli.main(["holds", "release", str(hold["id"]), "--by", blank]) == 1
        assert capsys.readouterr().err == "hold: --by: say who releases the hold\n"
    assert _rows(control_db)[0]["released_at"] is None
    assert cli.main(["holds", "release", str(hold["id"]), "--by", "po"]) == 0
    assert _rows(control_db)[0]["released_by"] == "po"


def test_place_needs_someone_who_places(control_db, capsys):
    assert _place(by="  ") == 1
    assert capsys.readouterr().err == "hold: --by: say who places the hold\n"
    assert _rows(control_db) == []


@pytest.mark.parametrize(
    ("flag", "limit"),
    [("--note", 500), ("--by", 200), ("--value", 500), ("--scope", 100), ("--subject", 63)],
)
def test_over_long_values_are_refused_naming_the_flag(control_db, capsys, flag, limit):
    # SQLite would store them; PostgreSQL and MariaDB would fail with a traceback quoting them.
    values = {"--note": "CR-1", "--by": "po", "--value": "17", "--scope": "*", "--subject": "x"}
    values[flag] = "9" * (limit + 1)
    argv = ["holds", "place", "--reason", "legal_hold"]
    for name, value in values.items():
        argv += [name, value]
    assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    assert err == f"hold: {flag}: longer than {limit} characters\n"
    assert out == ""
    assert _rows(control_db) == []


def test_release_refuses_an_over_long_name_and_an_impossible_id(control_db, capsys):
    assert _place() == 0
    capsys.readouterr()
    assert cli.main(["holds", "release", "1", "--by", "x" * 201]) == 1
    assert capsys.readouterr().err == "hold: --by: longer than 200 characters\n"
    for hold_id in ("0", "-5", str(2**63)):
        assert cli.main(["holds", "release", hold_id, "--by", "po"]) == 1
        assert "no such hold" in capsys.readouterr().err
    assert _rows(control_db)[0]["released_at"] is None


def test_list_shows_control_characters_as_escapes(control_db, capsys):
    note = "CR-2026-042\r\x1b[2Kall holds released\x07"
    assert _place("--note", note, by="Zoë\u202e de Vries") == 0
    capsys.readouterr()
    assert cli.main(["holds", "list"]) == 0
    out = capsys.readouterr().out
    assert "\r" not in out and "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert r"(CR-2026-042\r\x1b[2Kall holds released\x07)" in out
    assert r"by Zoë\u202e de Vries" in out  # printable Unicode as is
    assert out.endswith("1 holds\n") and out.count("\n") == 2


def test_list_escapes_the_released_by_of_a_released_hold(control_db, capsys):
    assert _place() == 0
    assert cli.main(["holds", "release", "1", "--by", "po\x1b]0;pwned\x07"]) == 0
    capsys.readouterr()
    assert cli.main(["holds", "list", "--all"]) == 0
    out = capsys.readouterr().out
    assert r"by po\x1b]0;pwned\x07" in out and "\x1b" not in out


def test_place_never_echoes_the_value(control_db, capsys):
    assert _place() == 0
    assert capsys.readouterr().out == "placed hold 1\n"
    # Refusals: an expiry in the past, not a phone number, a subject no policy maps.
    assert _place("--expires", "2001-01-01") == 1
    _assert_value_not_shown(capsys)
    assert _place(value="+31 6 91") == 1  # too short
    _assert_value_not_shown(capsys, held=("+31 6 91", "+31691"))
    argv = ["holds", "place", "--scope", "cdrs", "--subject", "nope", "--reason", "dispute"]
    assert cli.main([*argv, "--value", PHONE, "--by", "po"]) == 1
    _assert_value_not_shown(capsys)


def test_argparse_never_repeats_a_value_split_into_extra_arguments(control_db, capsys):
    # An unquoted value with spaces: `--value +31 6 12345678`.
    with pytest.raises(SystemExit) as exit_:
        cli.main([*PLACE, "--by", "po", "--value", "+31", "6", "12345678"])
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert "2 unexpected argument(s)" in err
    assert "12345678" not in out + err
    with pytest.raises(SystemExit):
        cli.main([*PLACE[:-2], "--reason", "whim", "--by", "po", "--value", PHONE])
    out, err = capsys.readouterr()
    assert "invalid choice: 'whim'" in err and PHONE not in out + err
    assert _rows(control_db) == []


def test_a_database_error_is_reported_by_type_without_the_statement(control_db, capsys):
    # A driver error's text and SQLAlchemy's traceback carry the statement's parameters.
    assert cli.main(["audit-init"]) == 0
    engine = sa.create_engine(control_db)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON retention_holds "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    engine.dispose()
    capsys.readouterr()
    assert _place() == 1
    out, err = capsys.readouterr()
    assert err == "hold: the control database refused or did not answer (IntegrityError)\n"
    assert "+31612345678" not in out + err


def test_holds_before_audit_init_name_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AIRFLOW_CONN_LIFECYCLE_AUDIT", f"sqlite:///{tmp_path / 'fresh.db'}")
    assert cli.main(["holds", "list"]) == 1
    assert "run `python -m lifecycle audit-init`" in capsys.readouterr().err
