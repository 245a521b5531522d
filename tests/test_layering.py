"""Layering, import cycles and sizes of the package folders, read with `ast` (nothing is imported).

Rules (issue 8, item 3 and 4; details in tests/layering.py and, for cycles, tests/cycles.py):
  * `models/` (na_deploy.models) imports only the standard library and torch;
  * the core (`na_deploy/`) never imports na_deploy.hw_targets or na_deploy.cli, not even inside a function;
  * `hw_targets/` never imports na_deploy.cli;
  * the IR (`na_deploy/ir/`) never imports its file formats (`na_deploy/io/`);
  * inside the core, no import goes up the stages: base < ir < io < data < training < simulate < convert <
    evaluate < verify < pipeline (issue 18);
  * no cycle among module-level imports, nor (a separate, stricter test) through lazy imports in functions;
  * no import of a na_deploy module that does not exist;
  * no module over 400 lines, no function over 80 lines, except the commented SIZE_ALLOWED entries.
The second half plants violations (in memory and in a copy of the tree) and shows each one is reported,
naming the file, line and import: the checks can fail.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

import layering  # tests/layering.py, beside this file (pytest puts tests/ on sys.path)
from cycles import import_cycles  # tests/cycles.py
from layering import (layer_violations, missing_modules, module_name, oversized, read_sources, size_offenders,
                      stage_violations)

REPO = Path(__file__).resolve().parents[1]

# Size exceptions: "path" (module) or "path::Qualified.name" (function) -> why it may stay that long.
# Keep each entry justified; an entry that no longer exceeds its limit fails test_size_allow_list_is_current.
SIZE_ALLOWED: dict[str, str] = {}


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    return read_sources(REPO)


def _report(title: str, messages: list[str]) -> str:
    return f"{len(messages)} {title}:\n  " + "\n  ".join(messages)


# ---------------------------------------------------------------------------------------------- the tree
def test_scans_every_package_folder(sources):
    for path in ("na_deploy/__init__.py", "cli/main.py", "models/registry.py", "hw_targets/__init__.py",
                 "hw_targets/loihi2/target.py"):
        assert path in sources, path


def test_folder_names_match_pyproject_package_dir():
    """FOLDER_PACKAGES / module_name agree with pyproject.toml's package-dir, so names resolve as installed."""
    tomllib = pytest.importorskip("tomllib")
    package_dir = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for name, folder in package_dir.items():
        assert module_name(f"{folder}/__init__.py") == name, (name, folder)


def test_layer_rules_hold(sources):
    messages = layer_violations(sources)
    assert not messages, _report("layering violations", messages)


def test_no_import_goes_up_the_stages(sources):
    """Issue 18's stage order: base < ir < io < data < training < simulate < convert < evaluate < verify <
    pipeline; a module imports only its own stage and earlier ones."""
    messages = stage_violations(sources)
    assert not messages, _report("imports of a later stage", messages)


def test_no_module_level_import_cycles(sources):
    messages = import_cycles(sources)
    assert not messages, _report("import cycles", messages)


def test_no_import_cycles_even_through_lazy_imports(sources):
    """Issue 8's "hidden circles" (ir <-> ir_h5, loihi2 target <-> lava_backend) went through imports inside
    functions: a module may import lazily to defer cost, but not to hide a circle."""
    messages = import_cycles(sources, lazy=True)
    assert not messages, _report("import cycles through lazy imports", messages)


def test_no_imports_of_missing_modules(sources):
    messages = missing_modules(sources)
    assert not messages, _report("imports of modules that do not exist", messages)


def test_module_and_function_sizes(sources):
    messages = size_offenders(sources, SIZE_ALLOWED)
    assert not messages, _report(f"size offenders (limits {layering.MAX_MODULE_LINES} lines per module, "
                                 f"{layering.MAX_FUNCTION_LINES} per function)", messages)


def test_size_allow_list_is_current(sources):
    """Every exception names a module / function that is still over its limit (else delete the entry)."""
    stale = set(SIZE_ALLOWED) - {key for key, _, _ in oversized(sources)}
    assert not stale, f"SIZE_ALLOWED entries no longer needed: {sorted(stale)}"


# ---------------------------------------------------------------------------------------------- planted
CORE_LAZY = '''"""A core module that reaches for a target lazily."""
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from na_deploy.hw_targets.loihi2.target import Loihi2Target


def pick(name):
    from na_deploy.hw_targets import get_target
    return get_target(name)


def main():
    from . import cli
    from .cli.main import main as cli_main
    return importlib.import_module("na_deploy.hw_targets.loihi2"), cli, cli_main
'''

MODELS_BAD = '''"""A model file that imports outside torch."""
import math
from typing import Any

import numpy as np
import torch.nn
from torch import nn

from na_deploy.errors import ModelError
from ..checks import check_p
from .resnet import conv_bn
'''

HW_BAD = '''"""A target module that calls into the CLI."""
import cli.main


def run():
    from na_deploy.cli.main import main
    return main
'''


def planted(sources: dict[str, str], files: dict[str, str]) -> dict[str, str]:
    """The real sources plus (or with replaced) `files`."""
    return {**sources, **files}


def assert_reported(messages: list[str], *fragments: str) -> None:
    """Some message contains all `fragments`."""
    assert any(all(f in m for f in fragments) for m in messages), \
        f"nothing reports {fragments}; got:\n  " + "\n  ".join(messages)


def test_core_importing_hw_targets_or_cli_is_reported_even_lazily(sources):
    messages = layer_violations(planted(sources, {"na_deploy/planted.py": CORE_LAZY}))
    assert_reported(messages, "na_deploy/planted.py:6:", "`from na_deploy.hw_targets.loihi2.target import "
                    "Loihi2Target`", "must not import na_deploy.hw_targets")
    assert_reported(messages, "na_deploy/planted.py:10:", "`from na_deploy.hw_targets import get_target`")
    assert_reported(messages, "na_deploy/planted.py:15:", "`from . import cli`", "imports na_deploy.cli;")
    assert_reported(messages, "na_deploy/planted.py:16:", "`from .cli.main import main as cli_main`",
                    "imports na_deploy.cli.main;")
    assert_reported(messages, "na_deploy/planted.py:17:", "import_module(\"na_deploy.hw_targets.loihi2\")")
    assert len([m for m in messages if "planted" in m]) == 5


def test_models_importing_outside_torch_and_stdlib_is_reported(sources):
    messages = layer_violations(planted(sources, {"models/planted.py": MODELS_BAD}))
    ours = [m for m in messages if "planted" in m]
    assert_reported(ours, "models/planted.py:5:", "`import numpy as np`", "only the standard library, torch")
    assert_reported(ours, "models/planted.py:9:", "`from na_deploy.errors import ModelError`")
    assert_reported(ours, "models/planted.py:10:", "`from ..checks import check_p`", "imports na_deploy.checks;")
    assert len(ours) == 3, ours  # math, typing, torch, torch.nn and .resnet are allowed


def test_hw_targets_importing_cli_is_reported(sources):
    messages = layer_violations(planted(sources, {"hw_targets/loihi2/planted.py": HW_BAD}))
    assert_reported(messages, "hw_targets/loihi2/planted.py:2:", "`import cli.main`", "repository folder name")
    assert_reported(messages, "hw_targets/loihi2/planted.py:2:", "must not import na_deploy.cli")
    assert_reported(messages, "hw_targets/loihi2/planted.py:6:", "`from na_deploy.cli.main import main`")


def test_ir_importing_its_file_format_is_reported(sources):
    code = "def save(net, path):\n    from ..io import save_net\n    return save_net(net, path)\n"
    messages = layer_violations(planted(sources, {"na_deploy/ir/planted.py": code}))
    assert_reported(messages, "na_deploy/ir/planted.py:2:", "`from ..io import save_net`",
                    "must not import its file formats")


def test_import_of_a_later_stage_is_reported_even_lazily(sources):
    code = ('"""An IR module that reaches for the pipeline."""\nfrom na_deploy.pipeline import run_pipeline\n\n\n'
            "def run(net):\n    import na_deploy.verify.bit_exact\n    return run_pipeline(net)\n")
    messages = stage_violations(planted(sources, {"na_deploy/ir/planted.py": code}))
    ours = [m for m in messages if "planted" in m]
    assert_reported(ours, "na_deploy/ir/planted.py:2:", "`from na_deploy.pipeline import run_pipeline`",
                    "the ir stage must not import the later pipeline stage")
    assert_reported(ours, "na_deploy/ir/planted.py:6:", "`import na_deploy.verify.bit_exact`",
                    "the ir stage must not import the later verify stage")
    assert len(ours) == 2, ours


def test_base_module_importing_a_stage_and_a_package_without_stage_are_reported(sources):
    files = {"na_deploy/planted.py": "from na_deploy.ir import FloatNet\n",
             "na_deploy/extras/__init__.py": "from na_deploy.pipeline import run_pipeline\n"}
    messages = stage_violations(planted(sources, files))
    assert_reported(messages, "na_deploy/planted.py:1:", "the base stage must not import the later ir stage")
    assert_reported(messages, "na_deploy/extras/: the package na_deploy.extras is in no stage")
    assert not [m for m in messages if "extras/__init__.py" in m]  # no stage: no order to break


def test_lazy_cycle_is_reported_only_by_the_lazy_check(sources):
    files = {"na_deploy/cyc_a.py": "from .cyc_b import B\nA = 1\n",
             "na_deploy/cyc_b.py": "B = 2\n\n\ndef f():\n    from .cyc_a import A\n    return A\n"}
    tree = planted(sources, files)
    assert import_cycles(tree) == import_cycles(sources)
    assert_reported(import_cycles(tree, lazy=True), "na_deploy.cyc_a -> na_deploy.cyc_b -> na_deploy.cyc_a",
                    "na_deploy/cyc_b.py:5: `from .cyc_a import A`")


def test_missing_module_is_reported(sources):
    code = "def f():\n    from na_deploy.target import first_difference\n    return first_difference\n"
    messages = missing_modules(planted(sources, {"na_deploy/planted.py": code}))
    assert_reported(messages, "na_deploy/planted.py:2:", "`from na_deploy.target import first_difference`")


def test_two_module_cycle_is_reported_with_both_imports(sources):
    files = {"na_deploy/cyc_a.py": "from .cyc_b import B\nA = 1\n",
             "na_deploy/cyc_b.py": '"""b"""\ntry:\n    from na_deploy import cyc_a\nexcept ImportError:\n'
                                   '    cyc_a = None\nB = 2\n'}
    messages = import_cycles(planted(sources, files))
    assert_reported(messages, "na_deploy.cyc_a -> na_deploy.cyc_b -> na_deploy.cyc_a",
                    "na_deploy/cyc_a.py:1: `from .cyc_b import B`",
                    "na_deploy/cyc_b.py:3: `from na_deploy import cyc_a`")


def test_submodule_importing_from_its_package_init_is_a_cycle(sources):
    files = {"na_deploy/pkgx/__init__.py": "from .sub import S\nNAME = 1\n",
             "na_deploy/pkgx/sub.py": "from . import NAME\nS = NAME\n"}
    messages = import_cycles(planted(sources, files))
    assert_reported(messages, "na_deploy.pkgx -> na_deploy.pkgx.sub -> na_deploy.pkgx",
                    "na_deploy/pkgx/sub.py:1: `from . import NAME`")


def test_lazy_and_type_checking_imports_and_parent_packages_make_no_cycle(sources):
    files = {"na_deploy/lazy_a.py": "from .lazy_b import B\n",
             "na_deploy/lazy_b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .lazy_a import A\n"
                                    "else:\n    import os\nB = 1\n\ndef f():\n    from .lazy_a import A\n",
             "na_deploy/pkgy/__init__.py": "from .sub import S\n",
             "na_deploy/pkgy/sub.py": "from .helper import H\nfrom na_deploy.pkgy import helper\nS = H\n",
             "na_deploy/pkgy/helper.py": "H = 1\n"}
    assert import_cycles(planted(sources, files)) == import_cycles(sources)


def test_size_offenders_are_reported_and_allow_list_suppresses_them():
    body = "\n".join(f"    x{i} = {i}" for i in range(80))
    files = {"na_deploy/long.py": '"""long"""\n' + "\n".join(f"X{i} = {i}" for i in range(400)),
             "na_deploy/fn.py": f"class K:\n    def long(self):\n    {body.replace(chr(10), chr(10) + '    ')}\n"}
    messages = size_offenders(files)
    assert_reported(messages, "na_deploy/long.py: module has 401 lines (limit 400)")
    assert_reported(messages, "na_deploy/fn.py:2: function K.long has 81 lines (limit 80)")
    allowed = {"na_deploy/long.py": "test", "na_deploy/fn.py::K.long": "test"}
    assert size_offenders(files, allowed) == []


def test_planted_violations_in_a_copy_of_the_tree_fail_the_checks(tmp_path):
    """End to end on disk: copy the package folders, plant a lazy core -> hw_targets import into a real
    module, a cycle, and a models -> na_deploy import; every check reports its violation."""
    for folder in layering.FOLDER_PACKAGES:
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "na_deploy" / "errors.py", "a") as f:
        f.write("\n\ndef _planted():\n    from na_deploy.hw_targets import get_target\n    return get_target\n")
    (tmp_path / "models" / "registry.py").write_text(
        "from na_deploy.errors import NaDeployError\n" + (REPO / "models" / "registry.py").read_text())
    (tmp_path / "na_deploy" / "cyc_a.py").write_text("from .cyc_b import B\nA = 1\n")
    (tmp_path / "na_deploy" / "cyc_b.py").write_text("from .cyc_a import A\nB = 2\n")
    copied = read_sources(tmp_path)
    n_errors = len((REPO / "na_deploy" / "errors.py").read_text().splitlines())
    layer = layer_violations(copied)
    assert_reported(layer, f"na_deploy/errors.py:{n_errors + 4}:", "`from na_deploy.hw_targets import get_target`")
    assert_reported(layer, "models/registry.py:1:", "`from na_deploy.errors import NaDeployError`")
    assert_reported(import_cycles(copied), "na_deploy/cyc_a.py:1: `from .cyc_b import B`",
                    "na_deploy/cyc_b.py:1: `from .cyc_a import A`")


if __name__ == "__main__":  # print every finding at once: python tests/test_layering.py
    src = read_sources(REPO)
    for title, found in (("layering violations", layer_violations(src)), ("import cycles", import_cycles(src)),
                         ("import cycles through lazy imports", import_cycles(src, lazy=True)),
                         ("missing modules", missing_modules(src)),
                         ("size offenders", size_offenders(src, SIZE_ALLOWED))):
        print(_report(title, found) if found else f"0 {title}")
    sys.exit(0)
