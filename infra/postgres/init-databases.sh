#!/usr/bin/env bash
# One database and one owner role per server, so MLflow and Prefect never share tables or
# credentials. The postgres image runs this once, on the first start of an empty data volume
# (/docker-entrypoint-initdb.d); tests/integration/test_team_stack.py runs it against a scratch
# cluster. Connection settings come from libpq's variables (PGHOST, PGPORT, PGPASSWORD) when set.
set -euo pipefail

: "${POSTGRES_USER:?}" "${MLFLOW_DB_PASSWORD:?}" "${PREFECT_DB_PASSWORD:?}"

# psql fills :'var' in as a quoted literal, so passwords need no escaping here.
psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-postgres}" \
    -v mlflow_password="$MLFLOW_DB_PASSWORD" -v prefect_password="$PREFECT_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE ROLE prefect LOGIN PASSWORD :'prefect_password';
CREATE DATABASE prefect OWNER prefect;
SQL
