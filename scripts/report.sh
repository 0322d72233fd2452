#!/usr/bin/env bash
# The main job: build the environment if needed, then execute every notebook in order into reports/.
# Extra arguments go to `python -m clipwb report` (e.g. --profile quick --out /tmp/r).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1
exec "$ROOT/.venv/bin/python" -m clipwb report --profile full --out "$ROOT/reports" "$@"
