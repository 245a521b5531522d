#!/usr/bin/env bash
# Create or reuse a project-local virtual environment and install na-deploy into it (editable). Idempotent: a
# stamp of the inputs skips a finished install. Which environment (scripts/envs.sh):
#
#   bash scripts/bootstrap.sh            .venv, the pinned Lava environment (Python 3.10 or 3.11): everything,
#                                        Lava included, at the exact versions CI tested (hashed locks)
#   bash scripts/bootstrap.sh --no-lava  .venv-nolava, the core without Lava (Python 3.10 or newer): the newest
#                                        dependencies pyproject.toml allows (numpy 2), the test tools, no Lava
#
# Lava is archived (lava-nc 0.10.0 / lava-dl 0.6.0 declare Python <3.11 and numpy <2). On Python 3.11 the pinned
# environment installs requirements/py311.lock (every package but Lava, every file hashed: --require-hashes),
# then Lava from requirements/py311-lava.lock with --no-deps --ignore-requires-python (hashed too), and fixes the
# one lava-nc file that fails on 3.11 (compiler/var_model.py: dataclass instances as field defaults) with
# patches/lava-nc-0.10.0-var_model.patch, checked by tests/test_environment.py. On Python 3.10 Lava installs the
# normal way, as the extra `na-deploy[lava]`. Set PYTHON=/path/to/python3.x to choose the interpreter.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/envs.sh"

pinned_lava_env() {
  local venv="$root/.venv" ver
  ver=$(python_version "$base_python")
  case "$ver" in
    3.10|3.11) ;;
    *) echo "error: Python $ver found ($base_python); the pinned Lava environment needs Python 3.10 or 3.11" \
            "(set PYTHON=/path/to/python3.11; for the core without Lava: bash scripts/bootstrap.sh --no-lava)" >&2
       exit 2;;
  esac
  local stamp_src stamp="$venv/.na-deploy-installed"
  stamp_src=$(stamp_of "$root"/requirements/py311*.lock "$root/patches/"*.patch "$root/pyproject.toml")
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_src" ] && [ -x "$venv/bin/python" ]; then
    return 0
  fi
  echo "[bootstrap] creating/updating $venv (first run takes a few minutes)" >&2
  [ -x "$venv/bin/python" ] || new_venv "$base_python" "$venv"
  local py="$venv/bin/python"
  if [ "$ver" = "3.11" ]; then
    na_install "$py" -q --require-hashes -r "$root/requirements/py311.lock"
    "$py" -m pip install -qq --no-deps --ignore-requires-python --require-hashes -r "$root/requirements/py311-lava.lock"
    apply_lava_patches "$py"
    na_install "$py" -q --no-deps -e "$root"
  else
    na_install "$py" -q -e "$root[lava,test]"
  fi
  "$py" -c 'import lava.magma.compiler.var_model, na_deploy' \
    || { echo "error: install finished but lava/na_deploy do not import" >&2; exit 1; }
  echo "$stamp_src" > "$stamp"
  echo "[bootstrap] ready: $venv" >&2
}

apply_lava_patches() {  # apply_lava_patches PYTHON: patches/lava-nc-*.patch into its site-packages, once
  local site p
  site=$("$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  for p in "$root"/patches/lava-nc-*.patch; do
    if patch -p1 -d "$site" --dry-run -R -s -f < "$p" >/dev/null 2>&1; then
      echo "[bootstrap] $(basename "$p") already applied" >&2
    else
      patch -p1 -d "$site" -s -f < "$p" || { echo "error: could not apply $(basename "$p") to $site" >&2; exit 1; }
      echo "[bootstrap] applied $(basename "$p")" >&2
    fi
  done
}

core_env_without_lava() {
  local venv="$root/.venv-nolava" ver
  ver=$(python_version "$base_python")
  if ! "$base_python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "error: Python $ver found ($base_python); na-deploy needs Python 3.10 or newer" >&2
    exit 2
  fi
  local stamp_src stamp="$venv/.na-deploy-installed"
  stamp_src=$( (echo "$ver"; cat "$root/pyproject.toml") | sha256sum | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_src" ] && [ -x "$venv/bin/python" ]; then
    return 0
  fi
  echo "[bootstrap] creating/updating $venv (the core without Lava, newest dependencies)" >&2
  if ! [ -x "$venv/bin/python" ] || [ "$(python_version "$venv/bin/python")" != "$ver" ]; then
    rm -rf "$venv"
    new_venv "$base_python" "$venv"
  fi
  na_install "$venv/bin/python" -q --upgrade -e "$root[test]"
  "$venv/bin/python" -c 'import importlib.util, na_deploy.cli.main; assert importlib.util.find_spec("lava") is None' \
    || { echo "error: $venv: na_deploy does not import, or Lava is installed there" >&2; exit 1; }
  echo "$stamp_src" > "$stamp"
  echo "[bootstrap] ready: $venv" >&2
}

case "${1:-}" in
  "") pinned_lava_env ;;
  --no-lava) core_env_without_lava ;;
  *) echo "usage: bash scripts/bootstrap.sh [--no-lava]" >&2; exit 2 ;;
esac
