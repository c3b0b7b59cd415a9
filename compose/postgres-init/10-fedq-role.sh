#!/bin/sh
# Run once by the postgres image's entrypoint, on an empty data directory, as the superuser over
# the local socket. The server's role, fedq, owns the database fedq and nothing else: no
# superuser, no new roles or databases, so a leak of its password (or an SQL injection in the
# server) reaches fedq's tables, not the cluster. The superuser postgres keeps no password: it
# logs in only over the local socket, as the postgres system user, inside the container.
set -eu
case "$FEDQ_DB_PASSWORD" in
  *[!A-Za-z0-9._~-]*) echo "DB_PASSWORD: use only letters, digits and . _ ~ -" >&2; exit 1 ;;
esac
psql -v ON_ERROR_STOP=1 --no-psqlrc --username postgres --dbname postgres <<SQL
CREATE ROLE fedq LOGIN PASSWORD '$FEDQ_DB_PASSWORD' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
ALTER DATABASE fedq OWNER TO fedq;
ALTER ROLE postgres PASSWORD NULL;
SQL
psql -v ON_ERROR_STOP=1 --no-psqlrc --username postgres --dbname fedq -c 'ALTER SCHEMA public OWNER TO fedq'
