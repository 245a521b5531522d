#!/usr/bin/env bash
# Regenerate the hashed locks (a maintainer's step, not CI's), with `uv pip compile --generate-hashes` against PyPI:
#
#   requirements-py311.txt -> requirements/py311.lock       the pinned Lava environment but Lava, for Python 3.11
#                                                           (universal: every platform's files are hashed)
#   pyproject's extra `lava` -> requirements/py311-lava.lock lava-nc and lava-dl alone (scripts/bootstrap.sh
#                                                           installs them --no-deps --ignore-requires-python)
#   requirements/installer.in -> requirements/installer.lock uv, the installer scripts/envs.sh uses
#
# Versions already in a lock are kept; `bash scripts/lock.sh --upgrade` takes the newest ones the inputs allow.
# Then run `bash scripts/test.sh` (the pinned suite) before committing the locks: they are what CI installs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/envs.sh"
cd "$root"
uv=$(na_uv)
compile=("$uv" pip compile -q --generate-hashes --custom-compile-command "bash scripts/lock.sh" "$@")

"${compile[@]}" --universal --python-version 3.11 requirements-py311.txt -o requirements/py311.lock
"$base_python" - > requirements/lava.in <<'EOF'
import tomllib  # Python 3.11+
with open("pyproject.toml", "rb") as f:
    lava = tomllib.load(f)["project"]["optional-dependencies"]["lava"]
print("# pyproject.toml's extra `lava` (written by scripts/lock.sh)", *lava, sep="\n")
EOF
"${compile[@]}" --no-deps --python-version 3.10 requirements/lava.in -o requirements/py311-lava.lock
"${compile[@]}" --universal requirements/installer.in -o requirements/installer.lock
echo "[lock] requirements/py311.lock, py311-lava.lock, installer.lock written" >&2
