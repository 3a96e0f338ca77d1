"""`python -m lifecycle.demo check-test-setup`: what `make test` needs, checked before pytest.

The suite runs against real components and fails (never skips) when one is missing; this says
so in one screen instead of a hundred failures. It checks Debian's chromium (the UI tests), the
`test` databases on PostgreSQL and MariaDB, and Redis (the cluster tests). What is safe to do it
does itself: a missing `test` database is created on a server that answers. For the rest it
prints the one command to run, and exits 1.

The servers are the tests' own (tests/conftest.py, tests/cluster/conftest.py), with the same
variables to point elsewhere: LIFECYCLE_TEST_POSTGRES_URL, LIFECYCLE_TEST_MARIADB_URL,
LIFECYCLE_TEST_REDIS_URL.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MARIADB_URL = "mysql+pymysql://root@127.0.0.1:3306/test"
REDIS_URL = "redis://127.0.0.1:6379/11"
CONNECT_TIMEOUT = 5  # seconds


def check_chromium() -> str | None:
    if shutil.which("chromium"):
        return None
    return (
        "Debian's chromium is not on PATH (the UI tests drive it, never a downloaded browser): "
        "sudo apt-get install -y chromium"
    )


def _server_url(url):
    """The same server, without the database (which may not exist yet)."""
    import sqlalchemy as sa

    return sa.engine.URL.create(
        url.drivername,
        username=url.username,
        password=url.password,
        host=url.host,
        port=url.port,
        database="postgres" if url.get_backend_name() == "postgresql" else None,
        query={**url.query, "connect_timeout": str(CONNECT_TIMEOUT)},
    )


def ensure_database(url_text: str, start_hint: str) -> tuple[str | None, str | None]:
    """(problem, done): create the URL's database on its server if it is missing."""
    import sqlalchemy as sa

    url = sa.make_url(url_text)
    name = url.database
    label = "PostgreSQL" if url.get_backend_name() == "postgresql" else "MariaDB"
    where = f"{url.host or '127.0.0.1'}:{url.port or ''}".rstrip(":")
    engine = sa.create_engine(_server_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if label == "PostgreSQL":
                exists = conn.execute(
                    sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
                ).first()
                if exists:
                    return None, None
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            else:
                exists = conn.execute(
                    sa.text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :n"),
                    {"n": name},
                ).first()
                if exists:
                    return None, None
                conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS `{name}`"))
        return None, f"created the database {name!r} on {label} at {where}"
    except sa.exc.DBAPIError as exc:
        reason = " ".join(str(exc.orig).split())[:300]
        return f"{label} not usable at {where} as {url.username!r}: {reason}; {start_hint}", None
    finally:
        engine.dispose()


def check_redis(url: str) -> str | None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        return f"Redis does not answer at {url}: {exc}; start it: sudo service redis-server start"
    finally:
        client.close()
    return None


def check(
    postgres_url: str | None = None,
    mariadb_url: str | None = None,
    redis_url: str | None = None,
    chromium: Callable[[], str | None] = check_chromium,
) -> tuple[list[str], list[str]]:
    """(problems, what was done)."""
    problems: list[str] = []
    done: list[str] = []
    for url, hint in (
        (
            postgres_url or os.environ.get("LIFECYCLE_TEST_POSTGRES_URL") or POSTGRES_URL,
            "start it (sudo service postgresql start) or set LIFECYCLE_TEST_POSTGRES_URL",
        ),
        (
            mariadb_url or os.environ.get("LIFECYCLE_TEST_MARIADB_URL") or MARIADB_URL,
            "start it (sudo service mariadb start) or set LIFECYCLE_TEST_MARIADB_URL",
        ),
    ):
        problem, action = ensure_database(url, hint)
        problems += [problem] if problem else []
        done += [action] if action else []
    redis_url = redis_url or os.environ.get("LIFECYCLE_TEST_REDIS_URL") or REDIS_URL
    redis_problem = check_redis(redis_url)
    problems += [redis_problem] if redis_problem else []
    chromium_problem = chromium()
    problems += [chromium_problem] if chromium_problem else []
    return problems, done


def main() -> int:
    problems, done = check()
    for line in done:
        print(f"test set-up: {line}")
    if not problems:
        return 0
    print("The test suite needs what is missing here (it fails, never skips, without it):")
    for problem in problems:
        print(f"  - {problem}")
    return 1
