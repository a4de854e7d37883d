#!/usr/bin/env bash
# Quick start: set up .venv, run the whole pipeline (dvc repro) on the built-in synthetic
# dataset with the small CPU-friendly params.yaml, and end by printing the leaderboard.
# Artifacts, results store and MLflow runs land in ./workspace (browse: bdgen ui, from there).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
export MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1
if [ ! -d .dvc ]; then dvc init -q; fi
start=$(date +%s)
# dvc repro's stages run in forks of one warm server (README "Pipeline"): stopped at the end
trap 'bdgen pipeline servers --stop >/dev/null 2>&1 || true' EXIT
dvc repro "$@"
echo
echo "pipeline finished in $(( $(date +%s) - start )) s; leaderboard: results/leaderboard.md"
echo "browse the runs: (cd workspace && bdgen ui)    metrics: dvc metrics show    plots: dvc plots show"
