#!/bin/sh
# First start of the PostgreSQL volume only (docker-entrypoint-initdb.d): one role per owner, and
# separate databases, so Temporal's schema tool and orderflow's migrations never touch each other.
# Temporal's two databases are created here, not by its schema tool, so its role needs no CREATEDB.
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v temporal_password="$TEMPORAL_DB_PASSWORD" \
  -v orderflow_password="$ORDERFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE temporal LOGIN PASSWORD :'temporal_password';
CREATE DATABASE temporal OWNER temporal;
CREATE DATABASE temporal_visibility OWNER temporal;
CREATE ROLE orderflow LOGIN PASSWORD :'orderflow_password';
CREATE DATABASE orderflow OWNER orderflow;
-- Nobody but the owner connects to a database; PUBLIC's default CONNECT would let each role read the other's.
REVOKE CONNECT ON DATABASE temporal FROM PUBLIC;
REVOKE CONNECT ON DATABASE temporal_visibility FROM PUBLIC;
REVOKE CONNECT ON DATABASE orderflow FROM PUBLIC;
SQL
