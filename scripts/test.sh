#!/usr/bin/env bash
# Set up and run the whole test suite, on SQLite and on a real PostgreSQL server started here
# on loopback (when PostgreSQL can be installed/started on this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1
PG_STARTED=""
if [ -z "${BDGEN_TEST_PG_URL:-}" ] && [ "${BDGEN_NO_PG:-}" != "1" ]; then
  if url=$(bash scripts/pg_test_server.sh start); then
    export BDGEN_TEST_PG_URL="$url"
    PG_STARTED=1
  else
    echo "warning: could not start PostgreSQL; PostgreSQL tests will be skipped" >&2
  fi
fi
cleanup() { [ -n "$PG_STARTED" ] && bash scripts/pg_test_server.sh stop >/dev/null 2>&1 || true; }
trap cleanup EXIT
.venv/bin/python -m pytest -q "$@"
