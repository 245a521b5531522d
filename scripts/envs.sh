# Sourced by scripts/bootstrap.sh, test.sh and lock.sh (needs $root): the environments and how packages get in.
#
#   .venv          the pinned Lava environment (Python 3.10 / 3.11): requirements/py311.lock + py311-lava.lock
#   .venv-nolava   the core without Lava: the newest dependencies pyproject.toml allows (numpy 2), no Lava
#   .venv-wheel    a clean venv holding the wheel built from the checkout (not editable), made by test.sh --wheel
#
# `na_install PYTHON ARGS...` is `pip install ARGS...` into PYTHON's venv, done by uv (NA_DEPLOY_INSTALLER=uv,
# the default: several times faster, and a second venv of the same packages is hard links into uv's cache) or
# by pip (NA_DEPLOY_INSTALLER=pip). uv comes from requirements/installer.lock (pinned, hashed) into its own venv
# under ~/.cache/na-deploy and is given pip's configuration (index URLs, find-links, constraints, certificate:
# `pip config list` and PIP_* variables), so that both installers see the same packages.

base_python="${PYTHON:-python3}"

python_version() {  # python_version PYTHON -> "3.11"
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'
}

new_venv() {  # new_venv PYTHON DIR: a venv (with pip) that git ignores wherever it lies
  "$1" -m venv "$2"
  echo '*' > "$2/.gitignore"
}

na_uv() {  # prints the path of uv, installing it on first use
  local lock="$root/requirements/installer.lock"
  local dir="${NA_DEPLOY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/na-deploy}/uv-$(sha256sum "$lock" | cut -c1-12)"
  if ! "$dir/bin/uv" --version >/dev/null 2>&1; then
    rm -rf "$dir"
    "$base_python" -m venv "$dir" >&2
    "$dir/bin/python" -m pip install -qq --require-hashes -r "$lock" >&2 \
      || { echo "error: could not install uv from $lock (set NA_DEPLOY_INSTALLER=pip to use pip)" >&2; return 1; }
  fi
  echo "$dir/bin/uv"
}

pip_config() {  # pip_config options|cert: pip's index URLs, find-links and constraints as uv options (one a
  # line), or pip's certificate bundle; from `pip config list` (its files and PIP_* variables)
  "$base_python" -m pip config list 2>/dev/null | "$base_python" -c '
import ast, sys
pip = {}
for line in sys.stdin:
    key, _, value = line.rstrip("\n").partition("=")
    pip[key.split(".", 1)[-1]] = ast.literal_eval(value)
if sys.argv[1] == "cert":
    print(pip.get("cert", ""))
    sys.exit()
for key, flag in (("index-url", "--index-url"), ("extra-index-url", "--extra-index-url"),
                  ("find-links", "--find-links"), ("constraint", "--constraint")):
    for value in pip.get(key, "").split():
        print(flag, value, sep="\n")
if pip.get("extra-index-url"):  # pip takes the best version from every index; so must uv
    print("--index-strategy", "unsafe-best-match", sep="\n")
' "$1"
}

na_install() {  # na_install PYTHON PIP-INSTALL-ARGS...
  local py="$1"; shift
  if [ "${NA_DEPLOY_INSTALLER:-uv}" = pip ]; then
    "$py" -m pip install "$@"
    return
  fi
  local uv options=() option cert="${SSL_CERT_FILE:-$(pip_config cert)}" hashed=""
  uv=$(na_uv) || return 1
  [[ " $* " == *" --require-hashes "* ]] && hashed=1
  while IFS= read -r option; do
    # a lock pins every version with ==: uv refuses pip's unpinned constraints (e.g. torch<=X) beside hashes
    if [ -n "$hashed" ] && [ "$option" = --constraint ]; then read -r option; continue; fi
    options+=("$option")
  done < <(pip_config options)
  env ${cert:+SSL_CERT_FILE="$cert"} "$uv" pip install --python "$py" "${options[@]}" "$@"
}

stamp_of() {  # stamp_of FILES...: a short hash of their contents
  cat "$@" | sha256sum | cut -c1-16
}
