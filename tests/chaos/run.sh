#!/usr/bin/env bash
# Run the chaos suite longer than CI does: each kill storm, hostile-file scenario and
# close race lasts SECONDS (default 60; CI runs them 1.5 s each), and prints what it did.
#   bash tests/chaos/run.sh [SECONDS] [pytest args...]    e.g. bash tests/chaos/run.sh 300 -k storm
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-60}"
shift || true
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python3
SLUICEGATE_CHAOS_SECONDS="$seconds" exec "$python" -m pytest tests/chaos -s -p no:cacheprovider -o timeout=0 "$@"
