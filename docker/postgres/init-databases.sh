#!/bin/sh
# First start of the compose PostgreSQL (docker-entrypoint-initdb.d): the platform's four
# databases. Their tables come from `realty migrate` (the `migrate` service), at every start.
set -eu
for database in dagster mlflow raw_data clean_data; do
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -c "CREATE DATABASE $database"
done
