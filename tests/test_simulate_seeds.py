"""`simulate NET1 NET2 ... --seeds S1,S2,...` (issue 20): one net per seed, each evaluated on its seed's split;
per-net numbers and the statistics over seeds in `pipeline --seeds`' schema. The nets come from one small
2-seed pipeline run (1 + 1 epochs, 60 test samples, no Lava), shared by the module.
"""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from na_deploy.cli.main import cli

SMALL = ["--epochs-fp", "1", "--epochs-qat", "1", "--timesteps", "1,2", "--eval-samples", "60",
         "--verify-samples", "0"]
S_KEYS = {"mean", "std", "ci95", "n"}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def two_nets(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim_seeds") / "run"
    res = run("pipeline", "--seeds", "0,1", *SMALL, "--out", out)
    assert res.exit_code == 0, res.output
    nets = [out / f"seed-{s}" / "net.nad.h5" for s in (0, 1)]
    return out, nets, json.loads((out / "report.json").read_text())


def test_simulate_seeds_gives_the_pipeline_seeds_statistics(two_nets, tmp_path):
    _, nets, rep = two_nets
    js, png = tmp_path / "sim.json", tmp_path / "sim.png"
    res = run("simulate", *nets, "--seeds", "0,1", "--timesteps", "1,2", "--samples", "60", "--quiet",
              "--json", js, "--plot", png)
    assert res.exit_code == 0, res.output
    assert "mean ± 95 % t interval over 2 nets" in res.output and png.is_file()
    got = json.loads(js.read_text())
    assert got["seeds"] == [0, 1] and got["nets"] == [str(n) for n in nets] and len(got["per_net"]) == 2
    assert set(got["stats"]["integer"]["1"]) == S_KEYS and got["stats"]["integer"]["1"]["n"] == 2
    assert got["stats"] == rep["stats"]  # the same nets, the same seeds' splits, the same 60 samples
    for row, seed_rep in zip(got["per_net"], rep["per_seed"]):
        assert row["snn_accuracy"]["integer"] == seed_rep["snn_accuracy"]["integer"]
        assert set(row["accuracy_se"]) == {"ann", "integer", "float"}


def test_one_net_without_seeds_is_as_before(two_nets, tmp_path):
    _, nets, rep = two_nets
    js = tmp_path / "one.json"
    res = run("simulate", nets[0], "--timesteps", "1,2", "--samples", "60", "--quiet", "--json", js)
    assert res.exit_code == 0, res.output
    got = json.loads(js.read_text())
    assert "stats" not in got and "per_net" not in got and got["net"] == str(nets[0])
    assert got["snn_accuracy"]["integer"] == rep["per_seed"][0]["snn_accuracy"]["integer"]
    assert "mean ± 95 %" not in res.output


@pytest.mark.parametrize("extra, why", [([], "need --seeds with one seed per net"),
                                        (["--seeds", "0"], "1 seeds for 2 nets"),
                                        (["--seeds", "0,0"], "distinct"),
                                        (["--seeds", "0,1", "--seed", "3"], "--seed: cannot be combined"),
                                        (["--seeds", "0,1", "--float-net", "x.float.nad.h5"], "--float-net")])
def test_simulate_seeds_refusals_are_one_line(two_nets, tmp_path, extra, why):
    _, nets, _ = two_nets
    res = run("simulate", *nets, *extra, "--json", tmp_path / "x.json")
    assert res.exit_code != 0 and why in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "x.json").exists()
