"""`na-deploy pipeline` and `na-deploy report` end to end, and their refusals (issue 5)."""
import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from na_deploy.cli.main import cli
from na_deploy.errors import NaDeployError
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.hw_targets.loihi2.limits import LOIHI2
from na_deploy.hw_targets.loihi2.target import Loihi2Target
from na_deploy.io import load_net
from na_deploy.pipeline.run import PipelineConfig, run_pipeline
from na_deploy.verify.provenance import check_chain, made_from, sha256_file

SMALL = ["--epochs-fp", "2", "--epochs-qat", "2", "--timesteps", "1,2,4", "--eval-samples", "60"]


def _run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


@pytest.mark.lava
def test_pipeline_runs_every_stage_and_marks_complete_C6(tmp_path):
    out = tmp_path / "run"
    r = _run(["pipeline", "--out", str(out), "--verify-samples", "3", "--verify-timesteps", "4",
              "--compare-no-noise-adaptor", *SMALL])
    assert r.exit_code == 0, r.output
    assert "BIT-EXACT" in r.output
    names = {p.name for p in out.iterdir()}
    assert {"COMPLETE", "report.json", "report.md", "fp.ckpt", "qat.ckpt", "qat_no_na.ckpt", "net.nad.h5",
            "net.float.nad.h5", "accuracy_vs_T.png", "layer_activity.png", "occasional_noise.png", "lava"} <= names
    assert not (tmp_path / "run.partial").exists()
    rep = json.loads((out / "report.json").read_text())
    assert 0.0 <= rep["ann_accuracy"] <= 1.0
    for kind in ("float", "integer"):
        assert set(rep["snn_accuracy"][kind]) == {"1", "2", "4"}
        assert all(0.0 <= a <= 1.0 for a in rep["snn_accuracy"][kind].values())
    v = rep["verify"]
    assert (v["samples"], v["timesteps"], v["bit_exact"], v["mismatches"]) == (3, 4, True, 0)
    assert all(row["equal"] and row["reference"] == row["lava"] for row in v["layers"])
    nna = rep["no_noise_adaptor"]
    assert {"ann_accuracy", "snn_accuracy"} <= set(nna)
    assert {"train_fp", "train_qat", "verify_lava", "total"} <= set(rep["timings_s"])
    # C8: recorded exactly as `convert` records (base names + SHA-256, never the .partial folder), chain intact
    for tag, ckpt in (("", "qat.ckpt"), ("_no_na", "qat_no_na.ckpt")):
        fnet, inet = load_net(out / f"net{tag}.float.nad.h5"), load_net(out / f"net{tag}.nad.h5")
        assert fnet.meta["made_from"] == made_from("checkpoint", out / ckpt)
        assert inet.meta["made_from"] == made_from("float_net", out / f"net{tag}.float.nad.h5")
        assert ".partial" not in json.dumps(fnet.meta) + json.dumps(inet.meta) and "convert_s" not in fnet.meta
        assert check_chain(out / f"net{tag}.nad.h5", out / ckpt, TARGET).ok
    man = json.loads((out / "lava" / "manifest.json").read_text())
    assert man["made_from"] == {"kind": "int_net", "file": "net.nad.h5", "sha256": sha256_file(out / "net.nad.h5")}
    assert (out / "lava" / "net.nad.h5").read_bytes() == (out / "net.nad.h5").read_bytes()


def test_pipeline_refuses_bad_input_with_exit_2_and_no_complete_folder(tmp_path):
    r = _run(["pipeline", "--out", str(tmp_path / "a"), "--data", str(tmp_path / "missing.npz")])
    assert r.exit_code == 2 and "missing.npz" in r.output and r.output.count("\n") == 1
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.zeros(4, int))
    r = _run(["pipeline", "--out", str(tmp_path / "b"), "--data", str(bad)])
    assert r.exit_code == 2 and "x_test" in r.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = _run(["pipeline", "--out", str(blocker / "run"), *SMALL])
    assert r.exit_code == 2 and "--out" in r.output
    r = _run(["pipeline", "--out", str(tmp_path / "c"), "--verify-samples", "100000", *SMALL])
    assert r.exit_code == 2 and "--verify-samples" in r.output
    r = _run(["pipeline", "--out", str(tmp_path / "d"), "--p", "0"])
    assert r.exit_code == 2 and "--p" in r.output
    r = _run(["pipeline", "--out", str(tmp_path / "e"), "--timesteps", "1,x"])
    assert r.exit_code == 2 and "--timesteps" in r.output
    for d in "abcde":
        assert not (tmp_path / d / "COMPLETE").exists() and not (tmp_path / f"{d}.partial" / "COMPLETE").exists()
    existing = tmp_path / "used"
    existing.mkdir()
    (existing / "x").write_text("keep")
    r = _run(["pipeline", "--out", str(existing), *SMALL])
    assert r.exit_code == 2 and "--force" in r.output and (existing / "x").read_text() == "keep"


def test_a_failed_stage_never_looks_finished(tmp_path):
    """A net that cannot fit (a target with no subtractive reset) fails at conversion: no <out>, no COMPLETE."""
    tiny = Loihi2Target(replace(LOIHI2, neuron_models=()))
    cfg = PipelineConfig(epochs_fp=1, epochs_qat=1, timesteps=(1, 2), verify_samples=0, eval_samples=20)
    with pytest.raises(NaDeployError):
        run_pipeline(cfg, tiny, tmp_path / "run", log=lambda m: None)
    assert not (tmp_path / "run").exists()
    assert (tmp_path / "run.partial").exists() and not (tmp_path / "run.partial" / "COMPLETE").exists()


def test_report_command_counts_resources_and_energy(tmp_path):
    out = tmp_path / "run"
    r = _run(["pipeline", "--out", str(out), "--verify-samples", "0", *SMALL])
    assert r.exit_code == 0, r.output
    r = _run(["report", str(out / "net.nad.h5"), "--samples", "8", "--timesteps", "4",
              "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["total"]["neurons"] == sum(row["neurons"] for row in rep["nodes"]) > 0
    assert rep["per_inference"]["timesteps"] == 4 and rep["per_inference"]["energy_uJ"] > 0
    r = _run(["report", str(out / "net.float.nad.h5")])
    assert r.exit_code == 2 and "float net" in r.output
    r = _run(["report", str(tmp_path / "nope.nad.h5")])
    assert r.exit_code == 2 and "no such file" in r.output


@pytest.mark.lava
def test_pipeline_from_nir_imports_converts_and_verifies(tmp_path):
    """Issue 10 item 4: `pipeline --from-nir model.nir --data x.npz` (no training): our zero-mode digits net
    written to NIR, then fixed point -> export (the stock-LIF backend has no bundle: skipped) -> verify ->
    accuracy vs T on the npz."""
    import nir

    from na_deploy.convert import to_floatnet
    from na_deploy.io.nir_io import to_nir
    from helpers import ridge_digits_cnn  # tests/helpers.py

    model, d = ridge_digits_cnn(widths=(4, 8), grid=10)
    fnet = to_floatnet(model, (1, 8, 8), d.normalization.channel_scale, name="digits_cnn", neuron="zero")
    nir.write(tmp_path / "model.nir", to_nir(fnet))
    np.savez(tmp_path / "x.npz", x_train=d.x_train, y_train=d.y_train, x_test=d.x_test, y_test=d.y_test)
    r = _run(["pipeline", "--from-nir", str(tmp_path / "model.nir")])
    assert r.exit_code == 2 and "--from-nir: needs --data" in r.output and r.output.count("\n") == 1, r.output
    out = tmp_path / "run"
    r = _run(["pipeline", "--from-nir", str(tmp_path / "model.nir"), "--data", str(tmp_path / "x.npz"),
              "--out", str(out), "--timesteps", "4,8,16", "--verify-samples", "4", "--verify-timesteps", "8",
              "--eval-samples", "100"])
    assert r.exit_code == 0, r.output
    assert "[export] skipped" in r.output and not (out / "fp.ckpt").exists() and (out / "COMPLETE").exists()
    rep = json.loads((out / "report.json").read_text())
    assert rep["config"]["from_nir"] == str(tmp_path / "model.nir") and "epochs_fp" not in rep["config"]
    assert {k: len(v) for k, v in rep["snn_accuracy"].items() if k in ("float", "integer")} == \
        {"float": 3, "integer": 3}
    assert rep["snn_accuracy"]["integer"]["16"] > 0.5, rep["snn_accuracy"]
    v = rep["verify"]
    assert (v["samples"], v["timesteps"], v["bit_exact"], v["mismatches"]) == (4, 8, True, 0)
    inet = load_net(out / "net.nad.h5")
    assert inet.meta["made_from"] == made_from("float_net", out / "net.float.nad.h5")
