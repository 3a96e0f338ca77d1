# The Airflow image of the production stack (docker-compose.yml): the official image with this
# project's pinned dependencies. dags/, plugins/ and include/ are mounted, not copied, so a
# policy change needs no rebuild; a dependency change does (`docker compose build`).
FROM apache/airflow:slim-3.3.2-python3.11

# The runtime part of requirements.txt only: everything above "# Tests and tooling".
COPY --chown=airflow:root requirements.txt constraints.txt /opt/retention/
RUN sed '/^# Tests and tooling/,$d' /opt/retention/requirements.txt > /opt/retention/runtime.txt \
    && pip install --no-cache-dir -r /opt/retention/runtime.txt -c /opt/retention/constraints.txt

# The SimpleAuthManager's passwords file lives on a volume the init service writes.
RUN mkdir -p /opt/airflow/auth
