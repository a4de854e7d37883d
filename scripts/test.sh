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
# Headless Chromium for the HTML report test (tests/test_report_html.py skips without it).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the HTML browser test will be skipped" >&2
  else
    echo "note: chromium missing (needs root + apt-get to install); HTML browser test skipped" >&2
  fi
fi
.venv/bin/python -m pytest -q "$@"
