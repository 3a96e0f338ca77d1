-- Roles and databases of the stack, run by the postgres-init service at every `docker compose up`
-- (idempotent), so a password changed in .env takes effect at the next start.
--   psql -v airflow_password=... -v owner_password=... -v retention_password=... -f init.sql
--
-- airflow          Airflow's metadata database and the Celery result backend
-- lifecycle_owner  owns the telecom store and the audit trail: creates their tables and grants
-- retention        the retention jobs: only what `lifecycle grants --apply` gives it
-- audit_reader     the API server's audit pages: SELECT on the audit trail and ledger (`--audit-reader`)
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE %I LOGIN', name)
FROM (VALUES ('airflow'), ('lifecycle_owner'), ('retention'), ('audit_reader')) AS wanted (name)
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = wanted.name)
\gexec

ALTER ROLE airflow WITH LOGIN PASSWORD :'airflow_password';
ALTER ROLE lifecycle_owner WITH LOGIN PASSWORD :'owner_password';
ALTER ROLE retention WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'retention_password';
ALTER ROLE audit_reader WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
    PASSWORD :'audit_reader_password';

SELECT format('CREATE DATABASE %I OWNER %I', name, owner)
FROM (VALUES ('airflow', 'airflow'), ('telecom', 'lifecycle_owner'), ('audit', 'lifecycle_owner'))
    AS wanted (name, owner)
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = wanted.name)
\gexec

-- Nobody connects where nothing is granted: the jobs' role gets CONNECT on telecom and audit
-- from `lifecycle grants --apply`, and never reaches Airflow's metadata.
REVOKE CONNECT ON DATABASE airflow, telecom, audit FROM PUBLIC;
