#!/usr/bin/env bash
# The tests, each in the environment it is for (scripts/envs.sh); installs/reuses it first.
#
#   bash scripts/test.sh [pytest args]            the whole suite in the pinned Lava environment (.venv)
#   bash scripts/test.sh --no-lava [pytest args]  every test not marked `lava`, in the core without Lava
#                                                 (.venv-nolava: the newest dependencies, numpy 2)
#   bash scripts/test.sh --wheel                  the sdist and wheel of the checkout (python -m build, twine
#                                                 check), the wheel installed (not editable) in a clean
#                                                 .venv-wheel at the no-Lava environment's versions, and
#                                                 `na-deploy pipeline --preset smoke` on the digits there, to COMPLETE
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/envs.sh"

wheel_check() {
  SECONDS=0
  bash "$root/scripts/bootstrap.sh" --no-lava
  local core="$root/.venv-nolava/bin/python" venv="$root/.venv-wheel" work
  work=$(mktemp -d)
  trap "rm -rf '$work'" EXIT
  echo "[wheel] sdist and wheel of $root" >&2
  new_venv "$core" "$work/tools"
  na_install "$work/tools/bin/python" -q "build>=1.2" "twine>=6.1"
  "$work/tools/bin/python" -m build --outdir "$work/dist" "$root" > "$work/build.log" 2>&1 \
    || { cat "$work/build.log"; echo "error: python -m build failed" >&2; return 1; }  # the wheel: from the sdist
  "$work/tools/bin/python" -m twine check --strict "$work/dist"/*
  echo "[wheel] built and checked in $SECONDS s; installing $(basename "$work"/dist/*.whl) into a clean $venv" >&2
  rm -rf "$venv"
  new_venv "$core" "$venv"
  "$core" -m pip freeze --exclude-editable > "$work/no-lava-versions.txt"
  na_install "$venv/bin/python" -q -c "$work/no-lava-versions.txt" "$work"/dist/*.whl
  cd "$work"  # outside the checkout: nothing of it can shadow the installed package
  "$venv/bin/python" - <<'EOF'
import importlib.resources, importlib.util, na_deploy
assert "site-packages" in na_deploy.__file__, f"na_deploy imported from {na_deploy.__file__}, not the wheel"
assert importlib.util.find_spec("lava") is None, "Lava is installed in the wheel's venv"
for backend, templates in {"lava": ("README.txt.tmpl", "run_lava_graph.py.tmpl"),
                           "netx": ("README_netx.txt.tmpl", "run_netx.py.tmpl")}.items():
    folder = importlib.resources.files(f"na_deploy.hw_targets.loihi2.{backend}") / "templates"
    for name in templates:
        assert (folder / name).is_file(), f"the wheel lacks the template {backend}/templates/{name}"
print(f"[wheel] na_deploy from {na_deploy.__file__}; templates present; no Lava")
EOF
  echo "[wheel] installed at $SECONDS s; na-deploy pipeline --preset smoke" >&2
  "$venv/bin/na-deploy" pipeline --preset smoke --out "$work/run" > "$work/pipeline.log" 2>&1 \
    || { tail -n 30 "$work/pipeline.log"; echo "error: na-deploy pipeline failed in $venv" >&2; return 1; }
  tr '\r' '\n' < "$work/pipeline.log" | grep -v -E '[0-9]+%\||^ *$' | tail -n 12
  [ -f "$work/run/COMPLETE" ] || { echo "error: the pipeline run is not COMPLETE" >&2; return 1; }
  "$venv/bin/python" -c '
import json, sys
verify = json.load(open(sys.argv[1]))["verify"]
assert verify["skipped"].startswith("Lava is not installed") and verify["bit_exact"] is None, verify
print("[wheel] pipeline COMPLETE; report.json verify skipped:", verify["skipped"].split(":")[0], "| golden:",
      verify["golden"]["file"])' "$work/run/report.json"
  echo "[wheel] done in $SECONDS s" >&2
}

case "${1:-}" in
  --no-lava)
    shift
    bash "$root/scripts/bootstrap.sh" --no-lava
    cd "$root"
    exec "$root/.venv-nolava/bin/python" -m pytest -q -m "not lava" "$@"
    ;;
  --wheel)
    wheel_check
    ;;
  *)
    bash "$root/scripts/bootstrap.sh"
    cd "$root"
    exec "$root/.venv/bin/python" -m pytest -q "$@"
    ;;
esac
