"""`na-deploy export --format lava` and `na-deploy verify` end to end (C6): exit codes, table, JSON, the
exported script runs, mismatches and model errors are reported, unfit nets refused before Lava starts."""
from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from na_deploy.cli.main import cli
from na_deploy.hw_targets.loihi2.reference.slow import slow_reference_simulate
from na_deploy.io import save_net
from na_deploy.verify.provenance import sha256_file
from na_deploy.testing import random_intnet

lb = pytest.importorskip("na_deploy.hw_targets.loihi2.lava.backend")
from na_deploy.hw_targets.loihi2.lava.processes import models as lava_models  # noqa: E402

pytestmark = pytest.mark.lava


def _digits_net(seed: int = 3, topology: str = "conv_pool_dense"):
    """A random IntNet for 1 x 8 x 8 inputs (the embedded digits)."""
    rng = np.random.default_rng(seed)
    while True:
        net = random_intnet(rng, topology, size=8)
        if net.input.shape == (1, 8, 8):
            return net


@pytest.fixture()
def net_file(tmp_path):
    path = tmp_path / "net.nad.h5"
    save_net(_digits_net(), path)
    return path


def _npz(tmp_path, n=6, shape=(1, 8, 8), seed=0):
    rng = np.random.default_rng(seed)
    path = tmp_path / "data.npz"
    x = rng.integers(0, 256, size=(n, *shape)).astype(np.uint8)
    y = np.arange(n) % 2
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    return path, x


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_verify_default_digits_all_equal_exit_0_C6(net_file, tmp_path):
    out = tmp_path / "v.json"
    r = invoke("verify", net_file, "--samples", 12, "--timesteps", 3, "--json", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert "BIT-EXACT: 12 samples at T=3" in r.output
    for node in ("conv0", "pool", "fc", "readout potentials"):
        assert node in r.output
    rep = json.loads(out.read_text())
    assert rep["equal"] is True and rep["samples"] == 12 and rep["first_mismatch"] is None
    assert [x["node"] for x in rep["layers"]] == ["conv0", "pool", "fc"] and all(x["equal"] for x in rep["layers"])
    assert rep["seconds"]["lava_per_sample"] > 0


def test_verify_npz_matches_slow_reference_totals(net_file, tmp_path):
    data, x = _npz(tmp_path)
    out = tmp_path / "v.json"
    r = invoke("verify", net_file, "--data", data, "--samples", 4, "--timesteps", 2, "--json", out, "--quiet")
    assert r.exit_code == 0, r.output
    ref = slow_reference_simulate(_digits_net(), x[:4], 2)
    rep = json.loads(out.read_text())
    assert {x["node"]: x["reference"] for x in rep["layers"]} == {k: int(v.sum()) for k, v in ref.spike_counts.items()}


def test_verify_mismatch_exit_1_names_sample_node_neuron_step_C6(net_file, monkeypatch, tmp_path):
    """One Lava weight perturbed after build (readout Dense): exit 1 and the location is printed."""
    real = lb.LavaBackend.run

    def perturbed(self, net, inputs, timesteps, **kw):
        def on_build(graph):
            w = graph.synapses[net.readout.name][0].weights.init
            w[...] = np.where(w < 200, w + 2, w)
        return real(self, net, inputs, timesteps, **{**kw, "on_build": on_build})

    monkeypatch.setattr(lb.LavaBackend, "run", perturbed)
    out = tmp_path / "v.json"
    r = invoke("verify", net_file, "--samples", 5, "--timesteps", 3, "--json", out, "--quiet")
    assert r.exit_code == 1, r.output
    assert "MISMATCH:" in r.output and "node readout, neuron (" in r.output and "window step" in r.output
    rep = json.loads(out.read_text())
    m = rep["first_mismatch"]
    assert rep["equal"] is False and rep["readout_equal"] is False and m["node"] == "readout"
    assert m["step"] >= 1 and m["lava_step_in_slot"] == 4 + m["step"]  # readout depth 4 (conv, pool, fc, readout)


def test_verify_model_exception_exits_nonzero_with_message(net_file, monkeypatch):
    def boom(self, a_in):
        raise ZeroDivisionError("injected model fault")

    monkeypatch.setattr(lava_models.PySubtractiveIFModelFixed, "update", boom)
    r = invoke("verify", net_file, "--samples", 2, "--timesteps", 2, "--quiet")
    assert r.exit_code == 2
    assert "error: Lava process model failed: ZeroDivisionError: injected model fault" in r.output


def test_verify_refuses_unfit_net_before_lava(tmp_path):
    net = _digits_net()
    net.nodes[0].bias_exp = 9  # Loihi 2 bias exponent is 3 bits
    path = tmp_path / "bad.nad.h5"
    save_net(net, path)
    before = {p.pid for p in mp.active_children()}
    r = invoke("verify", path, "--samples", 2, "--timesteps", 2, "--quiet")
    assert r.exit_code == 2 and "does not fit loihi2" in r.output and "bias_exp" in r.output
    assert {p.pid for p in mp.active_children()} == before


def test_verify_bad_requests_exit_2(net_file, tmp_path):
    data, _ = _npz(tmp_path, shape=(1, 6, 6))
    r = invoke("verify", net_file, "--data", data, "--samples", 2, "--quiet")
    assert r.exit_code == 2 and "x_test images have shape (1, 6, 6)" in r.output
    r = invoke("verify", tmp_path / "missing.nad.h5", "--samples", 2)
    assert r.exit_code == 2 and "file not found" in r.output
    r = invoke("verify", net_file, "--samples", 100000, "--quiet")
    assert r.exit_code == 2 and "has only" in r.output


def test_export_bundle_is_atomic_and_its_script_runs(net_file, tmp_path):
    out = tmp_path / "bundle"
    r = invoke("export", net_file, "--format", "lava", "--out", out, "--timesteps", 2)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", "manifest.json", "net.nad.h5", "run_lava_graph.py"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind
    assert "microcode" in (out / "README.txt").read_text()
    man = json.loads((out / "manifest.json").read_text())
    assert [n["name"] for n in man["nodes"]] == ["conv0", "pool", "fc", "readout"]
    # C8: the bundle's net is a byte copy of the IntNet, and the manifest records that file and its SHA-256
    assert (out / "net.nad.h5").read_bytes() == net_file.read_bytes()
    assert man["made_from"] == {"kind": "int_net", "file": "net.nad.h5", "sha256": sha256_file(net_file)}
    data, x = _npz(tmp_path, n=3)
    p = subprocess.run([sys.executable, str(out / "run_lava_graph.py"), "--inputs", str(data), "--timesteps", "2"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    ref = slow_reference_simulate(_digits_net(), x, 2)
    assert f"predictions: {ref.predictions.tolist()}" in p.stdout
    assert f"spikes {int(ref.spike_counts['conv0'].sum()):>10d}" in p.stdout

    # an existing non-empty folder is refused, --force replaces it
    r = invoke("export", net_file, "--out", out)
    assert r.exit_code == 2 and "not empty" in r.output
    r = invoke("export", net_file, "--out", out, "--force")
    assert r.exit_code == 0 and (out / "run_lava_graph.py").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_export_refuses_unfit_net(tmp_path):
    net = _digits_net()
    net.nodes[1].inputs[0].exponent = 2  # a pool (grouped Conv) ignores weight_exp in Lava
    path = tmp_path / "bad.nad.h5"
    save_net(net, path)
    r = invoke("export", path, "--out", tmp_path / "b")
    assert r.exit_code == 2 and "exponent" in r.output
    assert not (tmp_path / "b").exists()
