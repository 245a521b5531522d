#!/usr/bin/env bash
# Create or reuse the project-local virtual environment .venv and install everything na-deploy needs,
# Lava included. Idempotent: a stamp of the inputs (requirements, patch, pyproject) skips a finished install.
#
# lava-nc 0.10.0 / lava-dl 0.6.0 declare Python <3.11 and pin old torch; on Python 3.11 they are installed
# with --no-deps --ignore-requires-python beside their real dependencies (requirements-py311.txt), and the
# one lava-nc file that fails on 3.11 (compiler/var_model.py: dataclass instances as field defaults) is
# fixed by patches/lava-nc-0.10.0-var_model.patch, applied here and checked by tests/test_environment.py.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"

ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case "$ver" in
  3.10|3.11) ;;
  *) echo "error: Python $ver found ($py); na-deploy needs Python 3.10 or 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 2;;
esac

stamp_src=$(cat "$root/requirements-py311.txt" "$root/patches/"*.patch "$root/pyproject.toml" | sha256sum | cut -c1-16)
stamp="$venv/.na-deploy-installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_src" ] && [ -x "$venv/bin/python" ]; then
  exit 0
fi

echo "[bootstrap] creating/updating $venv (first run takes about 2 minutes)" >&2
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip)
if [ "$ver" = "3.11" ]; then
  "${pip[@]}" install -qq -r "$root/requirements-py311.txt"
  "${pip[@]}" install -qq --no-deps --ignore-requires-python lava-nc==0.10.0 lava-dl==0.6.0
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  for p in "$root"/patches/lava-nc-*.patch; do
    if patch -p1 -d "$site" --dry-run -R -s -f < "$p" >/dev/null 2>&1; then
      echo "[bootstrap] $(basename "$p") already applied" >&2
    else
      patch -p1 -d "$site" -s -f < "$p" || { echo "error: could not apply $(basename "$p") to $site" >&2; exit 1; }
      echo "[bootstrap] applied $(basename "$p")" >&2
    fi
  done
  "${pip[@]}" install -qq --no-deps -e "$root"
else
  # Python 3.10: Lava installs the normal way through the environment markers in pyproject.toml.
  "${pip[@]}" install -qq -e "$root[test]"
fi
"$venv/bin/python" -c 'import lava.magma.compiler.var_model, na_deploy' \
  || { echo "error: install finished but lava/na_deploy do not import" >&2; exit 1; }
echo "$stamp_src" > "$stamp"
echo "[bootstrap] ready: $venv" >&2
