#!/usr/bin/env bash
# Run once by the PostgreSQL image's entrypoint on an empty data directory
# (/docker-entrypoint-initdb.d), as the superuser: the platform's own role and database.
#
# The role owns the database and may create roles (the dashboards' read-only roles,
# docs/dashboards.md); it is not a superuser, so no zhizao service runs as one. The
# TimescaleDB extension is created here, by the superuser, where the server has it.
# tests/deploy/test_backup.py runs this script against a real PostgreSQL 15.
set -euo pipefail
: "${ZHIZAO_DB_PASSWORD:?ZHIZAO_DB_PASSWORD is not set}"
db=${ZHIZAO_DB_NAME:-zhizao}
role=${ZHIZAO_DB_USER:-zhizao}

# psql variables (:'pw', :"role") are quoted by psql itself: no value reaches the SQL text.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    --set=pw="$ZHIZAO_DB_PASSWORD" --set=db="$db" --set=role="$role" <<'SQL'
SET password_encryption = 'scram-sha-256';
CREATE ROLE :"role" LOGIN CREATEROLE NOSUPERUSER NOCREATEDB NOREPLICATION PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"role";
\connect :"db"
SELECT 'CREATE EXTENSION IF NOT EXISTS timescaledb'
 WHERE EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb') \gexec
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"role";
SQL
