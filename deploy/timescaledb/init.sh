#!/bin/sh
# First start of the database container only (docker-entrypoint-initdb.d): Dagster's own role and database.
# The telemetry tables, the pipeline's writer role and Grafana's reader role come from `iot-etl db migrate`
# (the compose service `migrate`, as the owner), which also closes Dagster's database to them.
# The password is read by psql from the environment (\getenv), never passed on a command line.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
\getenv dagster_password DAGSTER_DB_PASSWORD
CREATE ROLE dagster LOGIN PASSWORD :'dagster_password';
CREATE DATABASE dagster OWNER dagster;
REVOKE ALL ON DATABASE dagster FROM PUBLIC;
SQL
