"""The database servers the benchmarks use: those of the test suite (tests/conftest.py reads the
same variables), at 127.0.0.1 unless set."""

from __future__ import annotations

import os

POSTGRES_URL = os.environ.get(
    "LIFECYCLE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get(
    "LIFECYCLE_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)
