#!/bin/sh
# First start of the database container only (docker-entrypoint-initdb.d): the database of Dagster's
# own storage, and the read-only login of Grafana's datasource. The telemetry tables themselves come
# from `iot-etl db migrate` (the compose service `migrate`).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v reader_password="$GRAFANA_DB_PASSWORD" <<'SQL'
CREATE DATABASE dagster;
CREATE ROLE grafana_reader LOGIN PASSWORD :'reader_password';
GRANT pg_read_all_data TO grafana_reader;
ALTER ROLE grafana_reader SET default_transaction_read_only = on;
ALTER ROLE grafana_reader SET statement_timeout = '30s';
SQL
