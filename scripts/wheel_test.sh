#!/usr/bin/env bash
# The installed package works: build the wheel, install it (not editable) into a fresh
# virtual environment of its own (no system site-packages; torch==2.13.0 first, as
# scripts/setup.sh does), then run a small end-to-end job from a directory outside the
# repository: init, data prepare, tiny train, generate, evaluate, leaderboard, report.
#   bash scripts/wheel_test.sh            # everything in a temp dir under /tmp, removed after
#   KEEP=1 bash scripts/wheel_test.sh     # keep the temp dir (printed) for inspection
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
TMP=$(mktemp -d /tmp/bdgen-wheel.XXXXXX)
if [ "${KEEP:-}" = "1" ]; then echo "temp dir: $TMP"; else trap 'rm -rf "$TMP"' EXIT; fi
export MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1
unset PYTHONPATH BDGEN_DB_URL MLFLOW_TRACKING_URI

step() { echo "== $*"; }

step "build the wheel"
"$PY" -m venv "$TMP/build-venv"
"$TMP/build-venv/bin/pip" install -q build 2>&1 | grep -v "is ignored" || true
# From a copy of the tracked files: the build never writes into the repository.
mkdir -p "$TMP/src"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
  | (cd "$ROOT" && xargs -0 cp --parents -t "$TMP/src" 2>/dev/null || true)
"$TMP/build-venv/bin/python" -m build -q --wheel --outdir "$TMP/dist" "$TMP/src" >/dev/null
WHEEL=$(ls "$TMP"/dist/bdgen-*.whl)
echo "$WHEEL"
"$PY" -m zipfile -l "$WHEEL" > "$TMP/wheel-files.txt"
for f in bdgen/store/migrations/env.py bdgen/store/migrations/script.py.mako \
         bdgen/store/migrations/versions/0001 bdgen/report/profiles/preferred.yaml \
         bdgen/report/templates; do
  grep -q "$f" "$TMP/wheel-files.txt" || { echo "wheel lacks $f" >&2; exit 1; }
done

step "install it into a fresh virtual environment"
"$PY" -m venv "$TMP/venv"
"$TMP/venv/bin/pip" install -q torch==2.13.0 2>&1 | grep -v "is ignored" || true
"$TMP/venv/bin/pip" install -q "$WHEEL" 2>&1 | grep -v "is ignored" || true
BDGEN="$TMP/venv/bin/bdgen"

step "an end-to-end job outside the repository"
mkdir -p "$TMP/work"
cd "$TMP/work"
"$TMP/venv/bin/python" - <<'EOF'
import bdgen, pathlib
where = pathlib.Path(bdgen.__file__).resolve()
assert "site-packages" in where.parts, f"bdgen imported from {where}, not the wheel"
print("bdgen from", where.parent)
EOF
"$BDGEN" --version
"$BDGEN" init ws
cd ws
"$BDGEN" data prepare --num-graphs 300 --seed 0
DATASET=$(ls data/*.pt | head -1)
"$BDGEN" train --dataset "$DATASET" --model tiny --steps 20 --batch-size 16 --val-every 10 \
  --log-every 5 --checkpoint-every 1000 --device cpu --quiet
MODEL=$("$BDGEN" models --format csv | sed -n 2p | cut -d, -f1)
echo "model $MODEL"
"$BDGEN" generate --model "$MODEL" --method llada_topp0.9_no_remask --seed 1 --seed 2 \
  --num-samples 8 --steps 5 --device cpu
"$BDGEN" evaluate --pending
"$BDGEN" runs
"$BDGEN" leaderboard
"$BDGEN" report --no-html
"$BDGEN" db current
test -s reports/comparison.md
echo "wheel test passed"
