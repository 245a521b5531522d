"""CI-native use: the GitHub Actions example (examples/ci/verify.yml) and the pytest fixture for users' suites.

* the workflow is valid YAML with the steps a CI needs (checkout, Python 3.11, install, convert, verify,
  upload the reports, publish the JUnit XML), and every `na-deploy` command in it appears verbatim in
  README.md's "Use in CI" section;
* every `na-deploy` command there (workflow and README) names a real command and only its real options (parsed
  by the CLI's own click parser, nothing run);
* the fixture `na_bit_exact` (`pytest -p na_deploy.hw_targets.pytest_plugin`), run by pytester in a separate
  pytest on a tiny random IntNet with Lava: a net against itself passes; with a fault-injected backend (a
  real Lava run with one spike count changed afterwards) the test fails naming sample, node, neuron, values.
"""
from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import click
import numpy as np
import pytest
import yaml

from na_deploy.errors import IRError
# imported here, before pytester snapshots sys.modules: it drops modules first imported inside its test, and
# importing torch a second time in one process crashes
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.testing import random_inputs, random_intnet

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "examples" / "ci" / "verify.yml"
NA = ".venv/bin/na-deploy"


def _steps() -> list[dict]:
    wf = yaml.safe_load(WORKFLOW.read_text())
    assert wf.get("on", wf.get(True)) is not None  # YAML 1.1 reads the key `on` as True
    jobs = wf["jobs"]
    assert list(jobs) == ["verify"]
    return jobs["verify"]["steps"]


def _run_lines(steps: list[dict]) -> list[str]:
    return [ln.strip() for s in steps if "run" in s for ln in s["run"].splitlines() if ln.strip()]


def _readme_section() -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(r"^## Use in CI\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, "README.md has no '## Use in CI' section followed by another section"
    return m.group(1)


def _section_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", _readme_section(), re.S)
    return [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip().startswith(NA)]


def test_workflow_has_the_steps_a_ci_needs():
    steps = _steps()
    uses = [s.get("uses", "").split("@")[0] for s in steps]
    assert uses[:2] == ["actions/checkout", "actions/setup-python"]
    assert str(steps[1]["with"]["python-version"]) == "3.11"
    runs = _run_lines(steps)
    assert runs[0] == "bash scripts/bootstrap.sh"
    assert [shlex.split(r)[1] for r in runs[1:]] == ["convert", "verify"]
    verify = shlex.split(runs[2])
    junit, json_out = verify[verify.index("--junit") + 1], verify[verify.index("--json") + 1]
    up = steps[uses.index("actions/upload-artifact")]
    assert up["if"] == "always()" and up["with"]["path"].split() == [json_out, junit]
    pub = next(s for s in steps if "junit" in s.get("uses", "").lower())
    assert pub["if"] == "always()" and pub["with"]["report_paths"] == junit
    assert shlex.split(runs[1])[shlex.split(runs[1]).index("--out") + 1] == verify[2]  # verify what convert wrote


def test_every_workflow_command_appears_verbatim_in_the_readme():
    section = _readme_section().splitlines()
    runs = _run_lines(_steps())
    cmds = [r for r in runs if "na-deploy" in r]
    assert len(cmds) == 2
    for line in runs:
        assert line in [s.strip() for s in section], f"workflow line not in README 'Use in CI': {line}"


def _parse_with_cli(line: str) -> None:
    from na_deploy.cli.main import cli

    argv = shlex.split(line)
    assert argv[0] == NA, line
    name, args = argv[1], argv[2:]
    cmd = cli.get_command(click.Context(cli), name)
    assert cmd is not None and "unavailable" not in (cmd.help or ""), f"no command {name!r}: {line}"
    try:
        cmd.make_context(name, args)  # parses and converts the options; runs nothing
    except click.UsageError as e:
        pytest.fail(f"{line}: {e.format_message()}")


def test_commands_in_the_workflow_and_readme_parse_with_the_cli():
    lines = sorted(set(_section_commands()) | {r for r in _run_lines(_steps()) if r.startswith(NA)})
    assert len(lines) >= 6
    for line in lines:
        _parse_with_cli(line)
    with pytest.raises(pytest.fail.Exception, match="No such option"):
        _parse_with_cli(f"{NA} verify build/net.nad.h5 --no-such-option 1")  # the check can fail


def test_readme_lists_exit_codes_keys_and_flags():
    section = _readme_section()
    for code in ("| 0 |", "| 1 |", "| 2 |"):
        assert code in section
    for key in ("equal", "samples", "timesteps", "layers", "readout_equal", "mismatching_samples",
                "first_mismatch", "seconds", "backend", "sample_ids", "per_sample", "net_digest", "provenance",
                "fidelity", "golden"):
        assert f"`{key}`" in section, key
    for flag in ("--against", "--float-net", "--min-agreement", "--write-golden", "--golden", "--shard i/n",
                 "--jobs J", "--junit", "verify-merge", "na_deploy.hw_targets.pytest_plugin", "na_bit_exact"):
        assert flag in section, flag


def test_fixture_refuses_what_is_not_an_intnet(tmp_path):
    from na_deploy.hw_targets.pytest_plugin import load_intnet

    with pytest.raises(IRError, match=r"missing\.nad\.h5: file not found"):
        load_intnet(tmp_path / "missing.nad.h5")
    with pytest.raises(IRError, match="got a ndarray; allowed: an IntNet or the path"):
        load_intnet(np.zeros(3))


INNER_TESTS = '''
import numpy as np

from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.hw_targets.loihi2.lava.backend import LavaBackend
from na_deploy.io import save_net
from na_deploy.testing import random_inputs, random_intnet


class OffByOneLava(LavaBackend):
    """Fault injection: the real Lava run, then the first sample's first neuron of the first node +1 spike."""

    def run(self, net, inputs, timesteps, **kw):
        trace = super().run(net, inputs, timesteps, **kw)
        counts = trace.spike_counts[net.nodes[0].name]
        counts[(0,) * counts.ndim] += 1
        return trace


def _net():
    rng = np.random.default_rng(7)
    net = random_intnet(rng, "conv_pool_dense", size=4)
    return net, random_inputs(rng, net, 2)


def test_net_against_itself_passes(na_bit_exact, tmp_path):
    net, x = _net()
    save_net(net, tmp_path / "net.nad.h5")
    report = na_bit_exact(str(tmp_path / "net.nad.h5"), x, 3)  # a path, target by name, its default backend
    assert report.equal and report.samples == 2


def test_injected_fault_fails(na_bit_exact):
    net, x = _net()
    na_bit_exact(net, x, 3, backend=OffByOneLava(TARGET), locate=False)
'''


@pytest.mark.lava
@pytest.mark.skipif(importlib.util.find_spec("lava") is None, reason="Lava is not installed")
def test_na_bit_exact_fixture_passes_and_fails_in_a_users_suite(request):
    rng = np.random.default_rng(7)  # the inner tests' net and samples
    net = random_intnet(rng, "conv_pool_dense", size=4)
    x = random_inputs(rng, net, 2)
    node = net.nodes[0].name
    ref = int(TARGET.reference_simulate(net, x, 3).spike_counts[node][0, 0, 0, 0])
    # pytester only now, after the simulation: its snapshot of sys.modules drops what is first imported while it
    # lives, and the reference's first run imports parts of numba (its compiler loads them lazily); dropped, the
    # next compile in this process meets a second copy of them and fails (CI's 84 failures of stop 25)
    pytester = request.getfixturevalue("pytester")

    pytester.makepyfile(test_user_suite=INNER_TESTS)
    result = pytester.runpytest_subprocess("-p", "na_deploy.hw_targets.pytest_plugin", "-q", "-p", "no:cacheprovider",
                                           timeout=300)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        f"*AssertionError: not bit-exact on lava-* at T=3: 1 of 2 samples differ; first at sample 0, node {node}, "
        f"neuron (0, 0, 0): reference {ref}, backend {ref + 1}",
        "FAILED test_user_suite.py::test_injected_fault_fails*"])
