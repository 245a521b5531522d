#!/usr/bin/env bash
# The main job on the embedded digits data: installs/reuses .venv, then runs `na-deploy pipeline`.
# With no arguments: `na-deploy pipeline --out runs/demo --force`; otherwise the arguments go to
# `na-deploy pipeline` (e.g. --out runs/table1 --compare-no-noise-adaptor).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
if [ $# -eq 0 ]; then
  set -- --out "$root/runs/demo" --force   # the demo replaces its own previous run folder
fi
exec "$root/.venv/bin/na-deploy" pipeline "$@"
