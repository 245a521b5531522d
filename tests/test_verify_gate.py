"""The verify gate from Python (issue 18, contract C6 + C8): `na_deploy.verify.gate.run_gate` is what
`na-deploy verify` runs, so it gives the same report; a failing check makes `passed` False and is named.

The equality test runs Lava for real (marker lava). The other tests stand a reference-simulator backend in
for Lava: they test the gate's logic (which checks run, what fails, what is refused), not the backend."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from na_deploy.cli.main import cli
from na_deploy.convert import to_floatnet
from na_deploy.errors import NaDeployError
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.hw_targets.pytest_plugin import verify_gate
from na_deploy.io import load_net, save_net
from helpers import ridge_digits_cnn, tampered
from na_deploy.verify.bit_exact import reference_step_records
from na_deploy.verify.gate import GateReport, check_gate_request, run_gate
from na_deploy.verify.provenance import save_net_pair
from na_deploy.verify.samples import select_samples

T = 8


class ReferenceBackend:
    """A backend that runs the target's reference simulator; `bump=True` adds one spike to sample 0's first
    neuron of the first node (a fault to catch)."""

    name = "reference"
    label = "reference-as-backend"

    def __init__(self, target, bump: bool = False):
        self.target, self.bump = target, bump

    def run(self, net, inputs, timesteps, *, record_steps=False, progress=False, **kw):
        trace = self.target.reference_simulate(net, inputs, timesteps)
        if record_steps:
            trace.step_spikes, trace.step_readout = reference_step_records(net, inputs, timesteps, self.target)
        if self.bump:
            counts = trace.spike_counts[net.nodes[0].name]
            counts[(0,) * counts.ndim] += 1
        return trace


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A digits IntNet and its FloatNet, written the way `convert` writes them: (net path, FloatNet path)."""
    model, d = ridge_digits_cnn(0, grid=20)
    fnet = to_floatnet(model, d.input_shape, d.normalization.channel_scale, name="digits_cnn")
    inet = TARGET.to_fixed_point(fnet, max_timesteps=16)
    folder = tmp_path_factory.mktemp("gate")
    save_net_pair(fnet, inet, folder / "net.float.nad.h5", folder / "net.nad.h5")
    return folder / "net.nad.h5", folder / "net.float.nad.h5"


def _samples(net_path, n):
    return select_samples(load_net(net_path), None, n)


def _without_seconds(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "seconds"}


@pytest.mark.lava
def test_gate_from_python_equals_verify_json_C6_C8(pair, tmp_path):
    """Same net, samples and options: the gate's dict == `verify --json`'s (keys in the same order; only the
    timings differ), the same text lines, and byte-identical golden files."""
    net, float_net = (str(p) for p in pair)
    j, g_cli, g_py = tmp_path / "v.json", tmp_path / "cli.npz", tmp_path / "py.npz"
    r = CliRunner().invoke(cli, ["verify", net, "--samples", "6", "--timesteps", str(T), "--against", float_net,
                                 "--json", str(j), "--write-golden", str(g_cli), "--quiet"], catch_exceptions=False)
    assert r.exit_code in (0, 1), r.output
    x, ids = _samples(net, 6)
    report = run_gate(net, x, T, TARGET, TARGET.backend(), sample_ids=ids, against=float_net, write_golden=g_py)
    from_cli, from_py = json.loads(j.read_text()), json.loads(report.to_json())
    assert list(from_py) == list(from_cli) and list(from_py["seconds"]) == list(from_cli["seconds"])
    assert _without_seconds(from_py) == _without_seconds(from_cli)
    assert report.provenance is not None and report.fidelity is not None and report.golden is None
    assert (r.exit_code == 0) == report.passed
    printed = [ln for ln in r.output.splitlines() if not ln.startswith(("seconds per sample", "golden traces of"))]
    assert printed == [ln for ln in report.lines() if not ln.startswith("seconds per sample")]
    assert g_py.read_bytes() == g_cli.read_bytes()


def test_intact_net_passes_every_check(pair):
    net, float_net = pair
    x, ids = _samples(net, 40)
    report = run_gate(net, x, T, TARGET, ReferenceBackend(TARGET), sample_ids=ids, against=float_net,
                      min_agreement=0.5)
    assert isinstance(report, GateReport) and report.passed and report.failures() == []
    assert report.provenance.ok and report.fidelity.ok and report.golden is None
    d = report.to_dict()
    assert list(d)[:2] == ["net", "data"] and list(d)[-6:] == ["shard", "net_digest", "provenance", "fidelity",
                                                               "golden", "passed"]
    assert d["passed"] and d["fidelity"]["min_agreement"] == 0.5 and d["sample_ids"] == ids


def test_tampered_net_fails_naming_provenance_and_fidelity_C8(pair, tmp_path):
    net_path, float_net = pair
    net = load_net(net_path)
    node = net.nodes[1].name
    path = tmp_path / "net.nad.h5"
    save_net(tampered(net, node), path)
    (tmp_path / "net.float.nad.h5").write_bytes(float_net.read_bytes())
    x, ids = _samples(path, 40)
    report = run_gate(path, x, T, TARGET, ReferenceBackend(TARGET), sample_ids=ids, against=float_net)
    assert report.equal and not report.passed  # the backend runs the tampered file exactly: equality is not enough
    assert [name for name, _ in report.failures()] == ["provenance", "fidelity"]
    assert node in report.provenance.message and node in report.fidelity.message
    assert report.failure_message().startswith("verify gate failed: provenance: ")
    assert report.to_dict()["passed"] is False


def test_golden_difference_fails_naming_golden(pair, tmp_path):
    net_path, _ = pair
    x, ids = _samples(net_path, 10)
    g = tmp_path / "golden.npz"
    backend = ReferenceBackend(TARGET)
    assert run_gate(net_path, x, T, TARGET, backend, sample_ids=ids, write_golden=g, fidelity=False).passed
    assert run_gate(net_path, x, T, TARGET, backend, sample_ids=ids, golden=g, fidelity=False).golden.ok
    net = load_net(net_path)
    net = tampered(net, net.nodes[1].name)  # an in-memory net whose spikes differ from the golden ones
    report = run_gate(net, x, T, TARGET, backend, sample_ids=ids, golden=g, fidelity=False)
    assert not report.passed and [name for name, _ in report.failures()] == ["golden"]
    assert report.golden.message.startswith("golden difference: sample ")
    assert report.net is None and report.to_dict()["golden"]["ok"] is False


def test_backend_mismatch_fails_naming_bit_exact(pair):
    net_path, _ = pair
    x, ids = _samples(net_path, 4)
    report = run_gate(net_path, x, T, TARGET, ReferenceBackend(TARGET, bump=True), sample_ids=ids, fidelity=False)
    assert not report.equal and not report.passed
    (name, why), = report.failures()
    assert name == "bit_exact" and why.startswith("MISMATCH: 1 of 4 samples differ; first at sample 0")


def test_plugin_gate_returns_the_report_or_fails_naming_the_check(pair):
    net_path, _ = pair
    x, ids = _samples(net_path, 4)
    report = verify_gate(str(net_path), x, T, backend=ReferenceBackend(TARGET), sample_ids=ids, fidelity=False)
    assert report.passed and report.net == str(net_path)
    with pytest.raises(AssertionError, match=r"^verify gate failed: bit_exact: MISMATCH: 1 of 4 samples differ"):
        verify_gate(net_path, x, T, backend=ReferenceBackend(TARGET, bump=True), sample_ids=ids, fidelity=False)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"jobs": 0}, "--jobs 0"),
    ({"jobs": 2, "shard": "1/2"}, "--jobs and --shard"),
    ({"golden": "a.npz", "write_golden": "b.npz"}, "--golden and --write-golden"),
    ({"write_golden": "b.npz", "shard": "1/2"}, "--write-golden with --shard"),
    ({"fidelity": False, "min_agreement": 0.5}, "--skip-fidelity with"),
    ({"min_agreement": 1.5}, "--min-agreement 1.5"),
])
def test_requests_that_cannot_work_are_refused_in_one_line(kwargs, fragment):
    with pytest.raises(NaDeployError, match=fragment) as e:
        check_gate_request(**kwargs)
    assert "\n" not in str(e.value)


def test_thresholds_without_a_floatnet_are_refused(pair):
    net = load_net(pair[0])
    x, ids = _samples(pair[0], 2)
    with pytest.raises(NaDeployError, match="records no FloatNet beside it; pass --float-net"):
        run_gate(net, x, T, TARGET, ReferenceBackend(TARGET), min_agreement=0.5)
