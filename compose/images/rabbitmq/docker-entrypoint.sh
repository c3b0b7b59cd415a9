#!/bin/sh
# The entrypoint of fedq/rabbitmq (Debian's rabbitmq-server package, scripts/compose-images),
# doing for `docker-entrypoint.sh rabbitmq-server` what the compose files rely on in the upstream
# image: the data directory owned by rabbitmq, the broker run as rabbitmq in the foreground,
# logging to standard output. Anything else is run as given.
set -eu
if [ "${1:-}" = rabbitmq-server ]; then
  shift
  install -d -o rabbitmq -g rabbitmq -m 0750 /var/lib/rabbitmq /var/log/rabbitmq
  # A volume created by Docker belongs to root the first time.
  [ "$(stat -c %U /var/lib/rabbitmq)" = rabbitmq ] || chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
  export HOME=/var/lib/rabbitmq
  cd /var/lib/rabbitmq
  exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
fi
exec "$@"
