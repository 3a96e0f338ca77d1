"""`make test` checks its set-up first: it creates a missing `test` database on a server that
answers, and names what it cannot do (chromium, a server down) with the command to run."""

from __future__ import annotations

import secrets
import socket

import pytest
import sqlalchemy as sa

from lifecycle.demo import setup_check
from tests.conftest import MARIADB_URL, POSTGRES_URL


def _drop(url: sa.URL) -> None:
    admin = sa.create_engine(setup_check._server_url(url), isolation_level="AUTOCOMMIT")
    quote = '"' if url.get_backend_name() == "postgresql" else "`"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {quote}{url.database}{quote}"))
    finally:
        admin.dispose()


@pytest.mark.parametrize("base", [POSTGRES_URL, MARIADB_URL], ids=["postgresql", "mariadb"])
def test_a_missing_test_database_is_created(base, postgres_url, mariadb_url):
    url = sa.make_url(base).set(database=f"lifecycle_setup_check_{secrets.token_hex(4)}")
    text = url.render_as_string(hide_password=False)
    try:
        problem, done = setup_check.ensure_database(text, "start it")
        assert problem is None
        assert done is not None and url.database in done
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        finally:
            engine.dispose()
        assert setup_check.ensure_database(text, "start it") == (None, None)  # already there
    finally:
        _drop(url)


def test_everything_in_place_passes(postgres_url, mariadb_url):
    problems, _done = setup_check.check(chromium=lambda: None)
    assert problems == []


def test_what_is_missing_is_named_with_the_command_to_run(monkeypatch, capsys):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setattr(setup_check.shutil, "which", lambda _name: None)
    monkeypatch.setenv(
        "LIFECYCLE_TEST_POSTGRES_URL", f"postgresql+psycopg://postgres@127.0.0.1:{closed}/test"
    )
    monkeypatch.setenv(
        "LIFECYCLE_TEST_MARIADB_URL", f"mysql+pymysql://root@127.0.0.1:{closed}/test"
    )
    monkeypatch.setenv("LIFECYCLE_TEST_REDIS_URL", f"redis://127.0.0.1:{closed}/11")

    assert setup_check.main() == 1

    out = capsys.readouterr().out
    assert "sudo apt-get install -y chromium" in out
    assert f"PostgreSQL not usable at 127.0.0.1:{closed}" in out
    assert f"MariaDB not usable at 127.0.0.1:{closed}" in out
    assert f"Redis does not answer at redis://127.0.0.1:{closed}/11" in out
