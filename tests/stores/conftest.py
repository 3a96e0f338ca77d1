"""The SQL store tests' engine: one per database of the `sql_url` parameter (SQLite,
PostgreSQL, MariaDB), made as the tasks make theirs (UTC sessions, values never echoed)."""

import pytest

from lifecycle.stores.sql import create_engine


@pytest.fixture
def engine(sql_url):
    engine = create_engine(sql_url)
    yield engine
    engine.dispose()
