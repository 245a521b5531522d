#!/usr/bin/env bash
# The main job on the embedded digits data: installs/reuses .venv, then runs `na-deploy pipeline`.
# Extra arguments go to `na-deploy pipeline` (e.g. --out runs/demo --compare-no-noise-adaptor).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
exec "$root/.venv/bin/na-deploy" pipeline "$@"
