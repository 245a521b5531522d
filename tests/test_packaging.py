"""The package as pyproject.toml declares it: every package folder listed (cli/, models/ and hw_targets/ install
under the na_deploy namespace), the templates as package data, a core that needs no Lava and takes numpy 1 and 2,
no unmeasured upper Python bound, and a wheel built from the checkout that holds all of it."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# repository folder -> the package it installs as (pyproject [tool.setuptools] package-dir)
SOURCE_FOLDERS = {"na_deploy": "na_deploy", "cli": "na_deploy.cli", "models": "na_deploy.models",
                  "hw_targets": "na_deploy.hw_targets"}
LAVA_DISTRIBUTIONS = ("lava-nc", "lava-dl")


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _package_folders() -> dict[str, Path]:
    """Installed package name -> its folder, for every folder with an __init__.py under SOURCE_FOLDERS."""
    found = {}
    for folder, package in SOURCE_FOLDERS.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT / folder)
            if "__pycache__" not in rel.parts:
                found[".".join((package, *rel.parts))] = init.parent
    return found


def _requirement_name(spec: str) -> str:
    packaging_requirements = pytest.importorskip("packaging.requirements")
    return packaging_requirements.Requirement(spec).name.lower().replace("_", "-")


def test_every_package_folder_is_listed():
    setuptools_cfg = _pyproject()["tool"]["setuptools"]
    assert setuptools_cfg["package-dir"] == {v: k for k, v in SOURCE_FOLDERS.items()}
    listed = setuptools_cfg["packages"]
    assert len(listed) == len(set(listed)), "a package is listed twice"
    missing = sorted(set(_package_folders()) - set(listed))
    assert not missing, f"folders with an __init__.py that pyproject.toml does not list: {missing}"
    stale = sorted(set(listed) - set(_package_folders()))
    assert not stale, f"pyproject.toml lists packages with no folder: {stale}"


def test_templates_and_other_data_files_are_package_data():
    """Every file in a package folder that is not Python source is matched by its package's package-data."""
    package_data = _pyproject()["tool"]["setuptools"]["package-data"]
    owners = {folder: package for package, folder in _package_folders().items()}
    uncovered = []
    for source in SOURCE_FOLDERS:
        for f in sorted(p for p in (ROOT / source).rglob("*") if p.is_file()):
            if f.suffix in (".py", ".pyc") or "__pycache__" in f.parts:
                continue
            folder = next(p for p in f.parents if p in owners)  # the deepest package holding the file
            if not any(f.relative_to(folder).match(glob) for glob in package_data.get(owners[folder], ())):
                uncovered.append(f"{owners[folder]}: {f.relative_to(folder)}")
    assert not uncovered, f"data files no package-data glob covers: {uncovered}"
    assert {"na_deploy.hw_targets.loihi2.lava", "na_deploy.hw_targets.loihi2.netx"} <= set(package_data)


def test_core_needs_no_lava_and_takes_numpy_1_and_2():
    specifiers = pytest.importorskip("packaging.specifiers")
    project = _pyproject()["project"]
    core = {_requirement_name(d): d for d in project["dependencies"]}
    assert not set(LAVA_DISTRIBUTIONS) & set(core), "Lava must be the optional extra `lava`, not a dependency"
    assert not {"networkx", "asteval"} & set(core), "Lava's own pins belong to Lava's install, not to the core"
    numpy = specifiers.SpecifierSet(core["numpy"].split("numpy", 1)[1].split(";")[0].strip())
    for version in ("1.24.4", "1.26.4", "2.0.0", "2.4.6"):
        assert version in numpy, f"numpy {version} is refused by {core['numpy']!r}"
    lava = {_requirement_name(d) for d in project["optional-dependencies"]["lava"]}
    assert lava == set(LAVA_DISTRIBUTIONS)
    assert "<" not in project["requires-python"], "an upper Python bound needs a measurement that asks for it"


def _setuptools_for_pyproject():
    setuptools = pytest.importorskip("setuptools")
    major = int(setuptools.__version__.split(".")[0])
    if major < 77:
        pytest.skip(f"setuptools {setuptools.__version__} here; pyproject's build needs >= 77")


def test_wheel_holds_every_package_templates_and_no_lava_requirement(tmp_path):
    """`pip wheel` of the checkout (no build isolation: the installed setuptools): every package's __init__.py,
    the four templates, the console script, and Lava only as the extra `lava` in the metadata."""
    _setuptools_for_pyproject()
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("na_deploy-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in _package_folders():
        assert package.replace(".", "/") + "/__init__.py" in names, f"{package} is not in the wheel"
    for template in ("lava/templates/README.txt.tmpl", "lava/templates/run_lava_graph.py.tmpl",
                     "netx/templates/README_netx.txt.tmpl", "netx/templates/run_netx.py.tmpl"):
        assert f"na_deploy/hw_targets/loihi2/{template}" in names, f"{template} is not in the wheel"
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    meta = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    entry = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "na-deploy = na_deploy.cli.main:main" in entry
    for line in meta.splitlines():
        if line.startswith("Requires-Dist:") and any(d in line for d in LAVA_DISTRIBUTIONS):
            assert 'extra == "lava"' in line, line


def _locked_versions() -> dict[str, str]:
    """requirements/py311.lock: name -> the exact version CI installs (lines `name==version ...`)."""
    locked = {}
    for line in (ROOT / "requirements" / "py311.lock").read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, _, rest = line.partition("==")
            locked[name.strip().lower()] = rest.split()[0].rstrip("\\").split(";")[0].strip()
    return locked


def test_numba_is_a_core_dependency_locked_within_its_range_and_hypothesis_a_pinned_test_tool():
    """The fused loops of the CPU reference (issue 23) need numba wherever the core installs; the lock CI installs
    holds a numba inside pyproject's range, and the test extra's exact hypothesis (requirements-py311.txt too)."""
    specifiers = pytest.importorskip("packaging.specifiers")
    project = _pyproject()["project"]
    core = {_requirement_name(d): d for d in project["dependencies"]}
    assert "numba" in core, "numba is a dependency of the core (hw_targets/loihi2/reference/fused.py)"
    locked = _locked_versions()
    numba_range = specifiers.SpecifierSet(core["numba"].split("numba", 1)[1].strip())
    assert locked.get("numba") in numba_range, f"lock's numba {locked.get('numba')} outside {core['numba']!r}"
    assert "llvmlite" in locked
    (hypothesis,) = [d for d in project["optional-dependencies"]["test"] if _requirement_name(d) == "hypothesis"]
    version = hypothesis.split("==", 1)[1]
    assert locked.get("hypothesis") == version, (hypothesis, locked.get("hypothesis"))
    assert f"hypothesis=={version}" in (ROOT / "requirements-py311.txt").read_text().splitlines()
