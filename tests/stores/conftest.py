"""The store tests' fixtures: the SQL engine, one per database of the `sql_url` parameter
(SQLite, PostgreSQL, MariaDB), made as the tasks make theirs (UTC sessions, values never
echoed); and a boto3 client of moto's S3 server, made as the tasks make theirs."""

import pytest

from lifecycle.stores.sql import create_engine


@pytest.fixture
def engine(sql_url):
    engine = create_engine(sql_url)
    yield engine
    engine.dispose()


@pytest.fixture
def s3(s3_connection):
    from lifecycle.stores.s3 import client_from_connection

    return client_from_connection(s3_connection)
