# The Airflow image of the production stack (docker-compose.yml): the official image (slim: no
# providers this project does not use) with the project's pinned dependencies. dags/, plugins/
# and include/ are mounted, not copied, so a policy change needs no rebuild; a dependency change
# does (`docker compose build`).
FROM apache/airflow:slim-3.3.2-python3.11

# The runtime part of requirements.txt only: everything above "# Tests and tooling".
COPY requirements.txt constraints.txt /opt/retention/
RUN sed '/^# Tests and tooling/,$d' /opt/retention/requirements.txt > /tmp/runtime.txt \
    && pip install --no-cache-dir -r /tmp/runtime.txt -c /opt/retention/constraints.txt \
    && rm /tmp/runtime.txt

# The SimpleAuthManager's passwords file lives on a volume the init service writes; the
# requests' archives on one the workers write (a new named volume takes this ownership).
RUN mkdir -p /opt/airflow/auth /opt/airflow/exports/requests \
    && chmod 0700 /opt/airflow/exports
