#!/bin/sh
# The entrypoint of fedq/postgres (Debian's postgresql-15 package, scripts/compose-images),
# doing what the compose files rely on in the upstream postgres image: on an empty data
# directory, a cluster whose superuser is POSTGRES_USER with POSTGRES_PASSWORD (SCRAM over the
# network), a database POSTGRES_DB, and the scripts of /docker-entrypoint-initdb.d (*.sh, run as
# postgres against a server on the local socket only); then the server as postgres in the
# foreground.
set -eu
BIN=/usr/lib/postgresql/15/bin
PGDATA=${PGDATA:-/var/lib/postgresql/data}
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
if [ "${1:-postgres}" = postgres ]; then
  install -d -o postgres -g postgres -m 0700 "$PGDATA"
  install -d -o postgres -g postgres -m 2775 /run/postgresql
  [ "$(stat -c %U "$PGDATA")" = postgres ] || chown -R postgres:postgres "$PGDATA"
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
    user=${POSTGRES_USER:-postgres}
    db=${POSTGRES_DB:-$user}
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    chown postgres "$pwfile"
    as_postgres "$BIN/initdb" -D "$PGDATA" --username="$user" --pwfile="$pwfile" \
      --auth-local=peer --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
      echo "CREATE DATABASE \"$db\" OWNER \"$user\"" | as_postgres "$BIN/postgres" --single -D "$PGDATA" postgres >/dev/null
    fi
    if ls /docker-entrypoint-initdb.d/*.sh >/dev/null 2>&1; then
      as_postgres "$BIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
      for script in /docker-entrypoint-initdb.d/*.sh; do
        echo "fedq/postgres: running $script"
        PATH="$BIN:$PATH" as_postgres sh "$script"
      done
      as_postgres "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
    fi
    echo "fedq/postgres: cluster initialised in $PGDATA (superuser $user, database $db)"
  fi
  unset POSTGRES_PASSWORD FEDQ_DB_PASSWORD
  [ "${1:-}" = postgres ] && shift
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$BIN/postgres" -D "$PGDATA" "$@"
fi
exec "$@"
