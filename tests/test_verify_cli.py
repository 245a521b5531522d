"""`na-deploy verify` as a user's CI runs it (issue 11, contract C6 + C8): the provenance chain, fidelity to the
FloatNet, golden traces, shards merged, parallel jobs, JUnit, exit codes 0 / 1 / 2 with nothing half-written."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner

from na_deploy.cli.main import cli
from na_deploy.io import load_net, save_net
from helpers import tampered  # tests/helpers.py

pytestmark = pytest.mark.lava


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small real run: fp + QAT checkpoints, the FloatNet and the IntNet written by the pipeline."""
    out = tmp_path_factory.mktemp("verify") / "run"
    r = invoke("pipeline", "--out", out, "--epochs-fp", 4, "--epochs-qat", 2, "--timesteps", "2,4",
               "--eval-samples", 40, "--verify-samples", 0)
    assert r.exit_code == 0, r.output
    return out


def _tampered(run_dir, tmp_path):
    """The issue's tampering: one layer's conv weights negated, its threshold set to 3 (file beside the FloatNet)."""
    net = load_net(run_dir / "net.nad.h5")
    node = next(n for n in net.nodes if n.role == "layer" and n.inputs[0].op.kind == "conv2d" and n is not net.nodes[0])
    path = tmp_path / "net.nad.h5"
    save_net(tampered(net, node.name), path)
    (tmp_path / "net.float.nad.h5").write_bytes((run_dir / "net.float.nad.h5").read_bytes())
    return path, node.name


def test_intact_net_passes_every_check_and_writes_json_and_junit_C6_C8(run_dir, tmp_path):
    j, x = tmp_path / "v.json", tmp_path / "v.xml"
    r = invoke("verify", run_dir / "net.nad.h5", "--against", run_dir / "qat.ckpt", "--samples", 12,
               "--timesteps", 4, "--json", j, "--junit", x, "--quiet")
    assert r.exit_code == 0, r.output
    assert "BIT-EXACT: 12 samples" in r.output and "provenance: PASS" in r.output and "fidelity: PASS" in r.output
    rep = json.loads(j.read_text())
    assert rep["equal"] and rep["provenance"]["ok"] and rep["fidelity"]["ok"] and rep["golden"] is None
    assert rep["sample_ids"] == list(range(12)) and len(rep["per_sample"]) == 12
    assert all(s["equal"] for s in rep["per_sample"]) and len(rep["net_digest"]) == 64
    suite = ET.parse(x).getroot()
    cases = suite.iter("testcase")
    assert sum(1 for _ in cases) >= 12 + len(rep["layers"])
    assert not list(suite.iter("failure"))


def test_tampered_net_fails_with_what_changed_C8(run_dir, tmp_path):
    path, node = _tampered(run_dir, tmp_path)
    j = tmp_path / "t.json"
    r = invoke("verify", path, "--against", run_dir / "qat.ckpt", "--samples", 12, "--timesteps", 4,
               "--json", j, "--quiet")
    assert r.exit_code == 1, r.output
    assert "BIT-EXACT" in r.output  # Lava still runs the (tampered) file exactly: equality alone proves nothing
    assert "provenance: FAIL" in r.output and node in r.output
    assert "fidelity: FAIL" in r.output
    rep = json.loads(j.read_text())
    assert not rep["provenance"]["ok"] and not rep["fidelity"]["ok"]


def test_golden_round_trip_and_a_one_weight_change_is_caught(run_dir, tmp_path):
    g = tmp_path / "golden.npz"
    r = invoke("verify", run_dir / "net.nad.h5", "--samples", 10, "--timesteps", 4, "--write-golden", g, "--quiet")
    assert r.exit_code == 0, r.output
    assert g.is_file()
    r = invoke("verify", run_dir / "net.nad.h5", "--samples", 10, "--timesteps", 4, "--golden", g, "--quiet")
    assert r.exit_code == 0 and "golden: PASS" in r.output, r.output
    net = load_net(run_dir / "net.nad.h5")
    w = net.readout.inputs[0].op.weight
    i = np.unravel_index(np.argmax(np.abs(w)), w.shape)
    w[i] -= 2 * np.sign(w[i])  # one readout weight nudged: stays within limits, changes the potentials
    changed = tmp_path / "changed.nad.h5"
    save_net(net, changed)
    r = invoke("verify", changed, "--samples", 10, "--timesteps", 4, "--golden", g, "--skip-fidelity", "--quiet")
    assert r.exit_code == 1 and "golden: FAIL: golden difference: sample" in r.output, r.output


def test_four_shards_merge_to_the_unsharded_run_and_jobs_agree(run_dir, tmp_path):
    net, common = run_dir / "net.nad.h5", ("--samples", 12, "--timesteps", 2, "--skip-fidelity", "--quiet")
    assert invoke("verify", net, *common, "--json", tmp_path / "all.json").exit_code == 0
    for k in range(1, 5):
        r = invoke("verify", net, *common, "--shard", f"{k}/4", "--json", tmp_path / f"s{k}.json")
        assert r.exit_code == 0, r.output
    r = invoke("verify-merge", *(tmp_path / f"s{k}.json" for k in range(1, 5)), "--json", tmp_path / "m.json")
    assert r.exit_code == 0, r.output
    whole, merged = (json.loads((tmp_path / f).read_text()) for f in ("all.json", "m.json"))
    assert merged["layers"] == whole["layers"] and merged["equal"] and merged["samples"] == 12
    assert sorted(merged["sample_ids"]) == whole["sample_ids"]
    r = invoke("verify", net, *common, "--jobs", 2, "--json", tmp_path / "j.json")
    assert r.exit_code == 0, r.output
    jobs = json.loads((tmp_path / "j.json").read_text())
    assert jobs["layers"] == whole["layers"] and sorted(jobs["sample_ids"]) == whole["sample_ids"]


@pytest.mark.parametrize("args, msg", [
    (("--jobs", 0), "--jobs 0"),
    (("--shard", "3/2"), "--shard 3/2"),
    (("--golden", "a.npz", "--write-golden", "b.npz"), "--golden and --write-golden"),
    (("--jobs", 2, "--shard", "1/2"), "--jobs and --shard"),
    (("--min-agreement", 1.5), "--min-agreement 1.5"),
    (("--max-node-change", -0.1), "--max-node-change -0.1"),
    (("--skip-fidelity", "--min-agreement", 0.5), "--skip-fidelity with"),
])
def test_bad_requests_exit_2_with_one_line_and_write_nothing(run_dir, tmp_path, args, msg):
    j = tmp_path / "never.json"
    r = invoke("verify", run_dir / "net.nad.h5", "--samples", 4, "--json", j, *args)
    assert r.exit_code == 2 and msg in r.output and r.output.count("\n") == 1, r.output
    assert not j.exists() and not (tmp_path / "b.npz").exists()
