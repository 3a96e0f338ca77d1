"""A real Airflow cluster: scheduler, dag-processor, api-server and two Celery workers."""
