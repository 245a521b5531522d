"""Sharded and parallel verification (issue 11, C6 at scale): `na_deploy.verify.shards` and `na_deploy/verify/jobs.py`.

Shards partition the samples exactly (sample k in shard (k mod n) + 1); merging the reports of real verify
runs on the 4 shards of 8 samples equals the report of one run on all 8 (Lava runs for real, with one readout
weight perturbed after build, so some samples mismatch and the first of them lies in shard 4, not shard 1);
merges of different nets, overlapping or duplicated shards are refused naming the file; a missing shard is
reported and is not a pass. `na-deploy verify --jobs 2` (real subprocesses) equals one in-process run and
`verify-merge` of `verify --shard` reports.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from click.testing import CliRunner

from na_deploy.cli.main import cli
from na_deploy.verify.jobs import run_verify_jobs
from na_deploy.errors import NaDeployError
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.io import save_net
from na_deploy.verify.shards import ShardError, merge_reports, parse_shard, shard_indices
from na_deploy.testing import random_inputs, random_intnet
from na_deploy.verify.bit_exact import verify

T = 3
N = 8


# ------------------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize("text, expected", [("1/1", (1, 1)), ("3/4", (3, 4)), (" 2 / 7 ", (2, 7))])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["3/2", "0/4", "1/0", "0/0", "a/b", "1", "1/2/3", "-1/2", "1.0/2", ""])
def test_parse_shard_refuses_with_one_line(text):
    with pytest.raises(ShardError, match=r"^--shard .*: allowed i/n with 1 <= i <= n") as e:
        parse_shard(text)
    assert "\n" not in str(e.value) and isinstance(e.value, NaDeployError)
    if text == "3/2":
        assert str(e.value) == "--shard 3/2: allowed i/n with 1 <= i <= n"


@pytest.mark.parametrize("n_samples", [1, 2, 7, 8, 100, 101])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_shard_indices_partition_the_samples(n_samples, n):
    if n > n_samples:
        with pytest.raises(ShardError, match=f"exceeds the sample count; allowed n <= {n_samples}"):
            shard_indices(n_samples, 1, n)
        return
    parts = [shard_indices(n_samples, i, n) for i in range(1, n + 1)]
    every = np.concatenate(parts)
    assert sorted(every.tolist()) == list(range(n_samples))  # union = all samples, each exactly once
    assert len(set(every.tolist())) == n_samples
    for i, p in enumerate(parts, start=1):
        assert len(p) >= 1 and p.dtype == np.int64
        assert all((k % n) + 1 == i for k in p.tolist()) and list(p) == sorted(p)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert np.array_equal(shard_indices(n_samples, 1, n), parts[0])  # deterministic


def test_shard_indices_refuses_i_outside_1_to_n():
    with pytest.raises(ShardError, match="allowed i/n with 1 <= i <= n"):
        shard_indices(8, 5, 4)


# ---------------------------------------------------------------------- real shards vs one run (C6)
def _perturbed_case():
    """A random dense net whose readout weight from hidden neuron j is +2 in Lava: exactly the samples in
    which j spikes mismatch. j is chosen so that some samples are clean and the first bad one is not in shard 1."""
    rng = np.random.default_rng(29)
    net = random_intnet(rng, "dense_chain", size=3)
    x = random_inputs(rng, net, N)
    src = net.readout.inputs[0].source
    counts = TARGET.reference_simulate(net, x, T).spike_counts[src]
    cands = [j for j in range(counts.shape[1]) if 0 < (counts[:, j] > 0).sum() < N
             and int(np.argmax(counts[:, j] > 0)) % 4 != 0]
    assert cands, "test setup: no hidden neuron spiking in some samples only"
    j = cands[0]
    k = int(np.argmin(net.readout.inputs[0].op.weight[:, j]))

    def perturb(graph):
        graph.synapses[net.readout.name][0].weights.init[k, j] += 2

    return net, x, perturb, sorted(np.nonzero(counts[:, j] > 0)[0].tolist())


def _report(net, x, ids, perturb, shard):
    rep = verify(net, x[ids], T, TARGET, TARGET.backend(), on_build=perturb, locate=False, sample_ids=ids).to_dict()
    return {"net": "random29.nad.h5", "data": "random", "net_digest": "digest-29", "shard": shard, **rep}


@pytest.fixture(scope="module")
def perturbed():
    """(unsharded report, [shard 1/4 .. 4/4 reports], samples that must mismatch)."""
    net, x, perturb, bad = _perturbed_case()
    whole = _report(net, x, list(range(N)), perturb, None)
    shards = [_report(net, x, shard_indices(N, i, 4).tolist(), perturb, f"{i}/4") for i in range(1, 5)]
    return whole, shards, bad


def _without_timing(rep: dict) -> dict:
    return {k: v for k, v in rep.items() if k not in ("seconds", "shard", "shards", "complete", "passed",
                                                      "missing_shards", "exit_codes")}


@pytest.mark.lava
def test_merge_of_four_real_shards_equals_the_unsharded_report_C6(perturbed):
    whole, shards, bad = perturbed
    assert whole["mismatching_samples"] == len(bad) and not whole["equal"] and bad[0] % 4 != 0
    assert [p["sample"] for p in whole["per_sample"] if not p["equal"]] == bad
    merged = merge_reports(shards[::-1], names=[f"s{i}.json" for i in (4, 3, 2, 1)])  # order does not matter
    assert _without_timing(merged) == _without_timing(whole)
    assert merged["first_mismatch"]["sample"] == bad[0]  # from shard 4, though shard 1 mismatches too
    assert shards[0]["first_mismatch"]["sample"] > bad[0]
    assert merged["complete"] and not merged["passed"] and merged["missing_shards"] == []
    assert merged["seconds"]["lava"] == pytest.approx(sum(s["seconds"]["lava"] for s in shards))
    assert merged["seconds"]["shard_max"] == max(s["seconds"]["reference"] + s["seconds"]["lava"] for s in shards)


@pytest.mark.lava
def test_missing_shard_is_reported_and_not_a_pass(perturbed):
    _, shards, _ = perturbed
    clean = [s for s in shards if s["equal"]]
    assert clean, "test setup: one shard without mismatches"
    merged = merge_reports(clean)
    assert merged["equal"] and not merged["complete"] and not merged["passed"]
    assert merged["missing_shards"] == [i for i in range(1, 5) if f"{i}/4" not in [s["shard"] for s in clean]]
    merged = merge_reports([shards[0], shards[2], shards[3]])
    assert merged["missing_shards"] == [2] and merged["shards"]["present"] == [1, 3, 4]


@pytest.mark.lava
@pytest.mark.parametrize("change, match", [
    (lambda r: r.update(net_digest="digest-other"), "s2.json: net_digest 'digest-other' differs from s1.json's"),
    (lambda r: r.update(timesteps=T + 1), "s2.json: timesteps 4 differs from s1.json's 3"),
    (lambda r: r.update(backend="other"), "s2.json: backend 'other' differs"),
    (lambda r: r.update(data="other.npz"), "s2.json: data 'other.npz' differs"),
    (lambda r: r.update(shard="2/3"), "s2.json: shard 2/3 mixes shard counts with s1.json's 1/4"),
    (lambda r: r.update(shard="1/4"), "s2.json: sample id 1 is not in shard 1/4"),
    (lambda r: r.update(sample_ids=r["sample_ids"][:1]), "s2.json: 'sample_ids' missing or not 2 ids"),
    (lambda r: r.pop("net_digest"), "s2.json: has no net_digest but s1.json has a net_digest"),
    (lambda r: r["layers"].pop(), "s2.json: nodes .* differ from s1.json's"),
    (lambda r: r.pop("seconds"), "s2.json: not a verify report: no 'seconds'"),
])
def test_merge_refuses_reports_of_different_runs(perturbed, change, match):
    _, shards, _ = perturbed
    a, b = copy.deepcopy(shards[0]), copy.deepcopy(shards[1])
    change(b)
    with pytest.raises(ShardError, match=match) as e:
        merge_reports([a, b], names=["s1.json", "s2.json"])
    assert "\n" not in str(e.value)


@pytest.mark.lava
def test_merge_refuses_overlap_and_duplicates(perturbed):
    """Overlapping samples are refused naming the file: a shard given twice, a sample of another shard, two
    unsharded runs, a merged report merged again."""
    _, shards, _ = perturbed
    with pytest.raises(ShardError, match="^b.json: shard 1/4 is also given by a.json; allowed: each shard once$"):
        merge_reports([shards[0], copy.deepcopy(shards[0])], names=["a.json", "b.json"])
    b = copy.deepcopy(shards[2])
    b["sample_ids"] = [4, 6]  # shard 3/4 holds 2 and 6; 4 is shard 1's
    with pytest.raises(ShardError, match=r"^y.json: sample id 4 is not in shard 3/4 \(sample k is in shard"):
        merge_reports([shards[0], b], names=["x.json", "y.json"])
    a, b = copy.deepcopy(shards[0]), copy.deepcopy(shards[1])
    for r in (a, b):
        r.pop("shard")  # unsharded runs: each is shard 1/1
    with pytest.raises(ShardError, match="^b.json: shard 1/1 is also given by a.json"):
        merge_reports([a, b], names=["a.json", "b.json"])
    with pytest.raises(ShardError, match="^q.json: is already a merged report"):
        merge_reports([merge_reports(shards)], names=["q.json"])


@pytest.mark.lava
def test_differing_check_results_merge_as_and(perturbed):
    _, shards, _ = perturbed
    reps = copy.deepcopy(shards)
    for r in reps:
        r["golden"] = {"ok": r["shard"] != "3/4", "message": f"golden {r['shard']}"}
        r["fidelity"] = None
        r["odd"] = r["shard"]
    merged = merge_reports(reps)
    assert merged["golden"]["ok"] is False and merged["golden"]["message"] == "shard 3/4: golden 3/4"
    assert merged["fidelity"] is None and merged["not_merged"] == ["odd"] and not merged["passed"]


# ------------------------------------------------------------------------ verify-merge, --jobs (CLI)
def _write(tmp_path, reports):
    files = []
    for r in reports:
        f = tmp_path / f"shard{r['shard'].replace('/', 'of')}.json"
        f.write_text(json.dumps(r))
        files.append(str(f))
    return files


@pytest.mark.lava
def test_verify_merge_cli_verdicts(perturbed, tmp_path):
    _, shards, bad = perturbed
    files = _write(tmp_path, shards)
    out = tmp_path / "merged.json"
    r = CliRunner().invoke(cli, ["verify-merge", *files, "--json", str(out)])
    assert r.exit_code == 1, r.output
    assert f"first at sample {bad[0]}," in r.output and "4 of 4 merged" in r.output and r.output.endswith("FAIL\n")
    assert json.loads(out.read_text()) == json.loads(json.dumps(merge_reports(shards, names=files)))
    clean = [f for f, s in zip(files, shards) if s["equal"]]
    r = CliRunner().invoke(cli, ["verify-merge", *clean])
    assert r.exit_code == 1 and "INCOMPLETE: shard(s) " in r.output and "FAIL (shards missing)" in r.output
    r = CliRunner().invoke(cli, ["verify-merge", files[0], files[0]])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "is also given by" in r.output
    r = CliRunner().invoke(cli, ["verify-merge", str(tmp_path / "none.json")])
    assert r.exit_code == 2 and "none.json: file not found" in r.output


@pytest.fixture(scope="module")
def conv_net_file(tmp_path_factory):
    """A small random conv IntNet with the digits' 1x8x8 input, saved as a .nad.h5."""
    net = random_intnet(np.random.default_rng(6), "conv_chain", size=8)
    assert tuple(net.input.shape) == (1, 8, 8)
    path = tmp_path_factory.mktemp("jobs") / "net.nad.h5"
    save_net(net, path)
    return net, path


@pytest.mark.lava
def test_verify_jobs_equals_one_run_and_verify_merge(conv_net_file, tmp_path):
    """--jobs 2 (two real `python -m na_deploy.cli.main verify --shard k/2` processes) == verify of all 6
    samples in this process == verify-merge of the reports of `verify --shard 1/2` and `--shard 2/2`."""
    from na_deploy.data.arrays import load_dataset

    net, path = conv_net_file
    args = [str(path), "--samples", "6", "--timesteps", str(T)]
    merged = run_verify_jobs(args, 2, out_json=str(tmp_path / "jobs.json"))
    x = load_dataset(None).x_test[:6]
    whole = verify(net, x, T, TARGET, TARGET.backend()).to_dict()
    assert merged["exit_codes"] == [0, 0] and merged["passed"] and merged["sample_ids"] == list(range(6))
    for key in ("layers", "readout_equal", "mismatching_samples", "first_mismatch", "per_sample", "samples"):
        assert merged[key] == whole[key], key
    assert json.loads((tmp_path / "jobs.json").read_text())["layers"] == whole["layers"]
    files = []
    for k in (1, 2):
        files.append(str(tmp_path / f"s{k}.json"))
        r = CliRunner().invoke(cli, ["verify", *args, "--shard", f"{k}/2", "--json", files[-1], "--quiet"])
        assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["verify-merge", *files, "--json", str(tmp_path / "m.json")])
    assert r.exit_code == 0 and r.output.endswith("PASS\n"), r.output
    m = json.loads((tmp_path / "m.json").read_text())
    assert _without_timing(m) == _without_timing({k: v for k, v in merged.items() if k != "exit_codes"})


def test_verify_jobs_bad_request_is_one_line_naming_the_shard(tmp_path):
    with pytest.raises(ShardError, match=r"^verify --shard [12]/2: .*missing\.nad\.h5: file not found"):
        run_verify_jobs([str(tmp_path / "missing.nad.h5"), "--samples", "4"], 2)
    with pytest.raises(ShardError, match="--json: not allowed in the arguments of --jobs children"):
        run_verify_jobs(["net.nad.h5", "--json=x.json"], 2)
    with pytest.raises(ShardError, match="--jobs 0: allowed: an integer >= 1"):
        run_verify_jobs(["net.nad.h5"], 0)
