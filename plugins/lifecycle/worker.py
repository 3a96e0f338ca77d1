"""The Celery workers' configuration (`[celery] celery_config_options =
lifecycle.worker.CELERY_CONFIG`): Airflow's own, and Great Expectations loaded once per worker.

Every `verify` task imports Great Expectations, and its import (scipy, altair, every expectation
class) is seconds of every run of every policy. Airflow's task processes are forked from the
worker (`os.fork`, Linux): loaded in the worker before it starts, the library is already in
each task process, and `verify` pays nothing for it (`lifecycle.verification` logs which).
Only the worker loads it: the scheduler and the API server read this configuration too, and
never start a worker.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_init

CELERY_CONFIG = DEFAULT_CELERY_CONFIG


def preload(**_signal: Any) -> None:
    """Import what every verification needs, before the worker forks its pool and tasks (with
    the verification's own settings: no usage analytics, GX's logging quiet)."""
    from lifecycle import verification

    verification.load()


worker_init.connect(preload, weak=False)
