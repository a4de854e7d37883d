#!/usr/bin/env bash
# start: run a throw-away PostgreSQL cluster on 127.0.0.1:$PGPORT and print its SQLAlchemy URL.
# stop:  stop it and delete its directory.
set -euo pipefail
PGPORT=${BDGEN_PG_PORT:-55432}
D=${BDGEN_PG_DIR:-/tmp/bdgen-pg-$PGPORT}
find_bin() {
  for b in /usr/lib/postgresql/*/bin; do [ -x "$b/initdb" ] && { echo "$b"; return 0; }; done
  return 1
}
case "${1:-start}" in
  start)
    if ! PGBIN=$(find_bin); then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
      fi
      PGBIN=$(find_bin) || { echo "PostgreSQL is not installed" >&2; exit 1; }
    fi
    RUN=""
    if [ "$(id -u)" = 0 ]; then RUN="su postgres -c"; fi
    run() { if [ -n "$RUN" ]; then su postgres -s /bin/bash -c "$1"; else bash -c "$1"; fi; }
    if [ -d "$D" ]; then run "$PGBIN/pg_ctl -D $D/data -m immediate -w stop" >/dev/null 2>&1 || true; rm -rf "$D"; fi
    install -d "$D"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$D"
    run "$PGBIN/initdb -D $D/data -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8" >"$D.initdb.log" 2>&1 \
      || { echo "initdb failed (see $D.initdb.log)" >&2; exit 1; }
    run "$PGBIN/pg_ctl -D $D/data -l $D/server.log -w -o \"-h 127.0.0.1 -p $PGPORT -k $D -c fsync=off -c max_connections=200\" start" >&2
    "$PGBIN/pg_isready" -h 127.0.0.1 -p "$PGPORT" -q
    psql -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "create database bdgen_test" >&2
    echo "postgresql+psycopg://postgres@127.0.0.1:$PGPORT/bdgen_test"
    ;;
  stop)
    PGBIN=$(find_bin) || exit 0
    if [ "$(id -u)" = 0 ]; then
      su postgres -s /bin/bash -c "$PGBIN/pg_ctl -D $D/data -m fast -w stop" || true
    else
      "$PGBIN/pg_ctl" -D "$D/data" -m fast -w stop || true
    fi
    rm -rf "$D" "$D.initdb.log"
    ;;
esac
