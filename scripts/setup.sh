#!/usr/bin/env bash
# Create .venv (if missing) and install bdgen with its dev and ray extras.
# torch is installed first as the local CPU wheel (torch==2.13.0); pyproject keeps a range so
# GPU users can keep their CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q torch==2.13.0 2>&1 | grep -v "is ignored" || true
fi
.venv/bin/pip install -q -e '.[dev,ray]' 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import bdgen, torch, mlflow, dvc, sqlalchemy, alembic, ray" \
  || { echo "setup failed: bdgen's dependencies do not import" >&2; exit 1; }
