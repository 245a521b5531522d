"""Mode "zero" conversion (na_deploy.convert.neuron_modes): subtract stays byte-identical; the zero-mode
parameters (th = alpha*p*s, pre-charge, bias shift, out-synapses / alpha, relays th/2 with pre-charge 0) appear in
the nodes; relays re-emit their source exactly; on digits the zero-mode float SNN and the Loihi 2 integer
reference agree at T = 8; `convert --neuron` refuses an unknown mode with one line and converts in mode zero
through the normal fit check. The digits net is trained-looking without SGD, as in tests/test_fidelity.py."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from na_deploy.training.checkpoint import Checkpoint, cpu_state_dict, save_checkpoint
from na_deploy.cli.main import cli
from na_deploy.convert import convert_checkpoint, to_floatnet
from na_deploy.convert.neuron_modes import (DEFAULT_ZERO, NEURON_MODES, mode_of, RELAY_ALPHA, ZeroParams,
                                            apply_neuron_mode)
from na_deploy.errors import ConversionError, NaDeployError
from na_deploy.simulate.float_snn import simulate_float
from na_deploy.hw_targets.loihi2.fixed_point import quantize_node
from na_deploy.hw_targets.loihi2.reference.fast import reference_simulate
from na_deploy.hw_targets.loihi2.target import Loihi2Target
from na_deploy.io import load_net, save_net
from na_deploy.ir import ZERO, IntNet
from na_deploy.models import build_model
from na_deploy.pipeline.run import PipelineConfig, run_pipeline
from na_deploy.protocols import Violation
from na_deploy.verify.provenance import compare_nets
from na_deploy.training.surgery import quantize_model
from helpers import ridge_digits_cnn  # tests/helpers.py

T = 8
N = 120
MIN_AGREE = 0.85  # measured with DEFAULT_ZERO: 0.90 (108/120; subtract mode: 0.975); zero float acc 0.90 vs 0.975


def _digits_model(seed: int = 0):
    return ridge_digits_cnn(seed, grid=20)


def to_int(net, T: int = 16) -> IntNet:
    """Every node through the Loihi 2 fixed-point rules (`quantize_node`), without `check_fit`: the integer
    semantics of the zero-mode net, independent of the stock-LIF register rules another change adds."""
    nodes = [quantize_node(n, net, T)[0] for n in net.all_nodes()]
    return IntNet(input=net.input, nodes=nodes[:-1], readout=nodes[-1], meta={**net.meta, "max_timesteps": T})


@pytest.fixture(scope="module")
def digits():
    model, d = _digits_model()
    sub = to_floatnet(model, d.input_shape, d.normalization.channel_scale, name="digits_cnn")
    return model, d, sub


def test_subtract_mode_is_the_net_itself_and_byte_identical(digits, tmp_path):
    model, d, sub = digits
    assert apply_neuron_mode(sub, "subtract") is sub
    again = to_floatnet(model, d.input_shape, d.normalization.channel_scale, name="digits_cnn", neuron="subtract")
    save_net(sub, tmp_path / "a.float.nad.h5")
    save_net(again, tmp_path / "b.float.nad.h5")
    assert (tmp_path / "a.float.nad.h5").read_bytes() == (tmp_path / "b.float.nad.h5").read_bytes()


def test_zero_mode_parameters_appear_in_the_nodes(digits):
    _, _, sub = digits
    prm = ZeroParams(alpha=0.7, pc_th=0.3, pc_s=0.0, beta=0.1)
    zn = apply_neuron_mode(sub, "zero", prm)
    assert zn.meta["neuron_mode"] == {"mode": "zero", "alpha": 0.7, "pc_th": 0.3, "pc_s": 0.0, "beta": 0.1,
                                      "relay_alpha": RELAY_ALPHA}
    assert all(n.neuron.name == "subtract" for n in sub.nodes)  # the input net is not modified
    for a, b in zip(sub.nodes, zn.nodes):
        s = a.threshold / a.p
        assert b.neuron is ZERO and b.p == a.p and b.role == a.role == "layer"
        assert b.threshold == 0.7 * a.threshold and b.precharge == 0.3 * b.threshold
        assert np.array_equal(b.bias, a.bias + 0.1 * s)
        for sa, sb in zip(a.inputs, b.inputs):  # a spike still carries p*s: weights from a node scaled by 1/alpha
            want = sa.op.weight if sa.source == "input" else sa.op.weight / 0.7
            assert np.array_equal(np.asarray(sb.op.weight), np.asarray(want))
    assert np.array_equal(zn.readout.inputs[0].op.weight, sub.readout.inputs[0].op.weight / 0.7)
    assert np.array_equal(zn.readout.bias, sub.readout.bias)


def test_default_parameters_are_the_measured_choice(digits):
    _, _, sub = digits
    zn = apply_neuron_mode(sub, "zero")
    assert zn.meta["neuron_mode"]["alpha"] == DEFAULT_ZERO.alpha
    n0, z0 = sub.nodes[0], zn.nodes[0]
    assert z0.threshold == DEFAULT_ZERO.alpha * n0.threshold
    assert z0.precharge == DEFAULT_ZERO.pc_th * z0.threshold
    with pytest.raises(ConversionError, match="allowed: subtract, zero"):
        apply_neuron_mode(sub, "bogus")
    with pytest.raises(ConversionError, match="every node subtract"):
        apply_neuron_mode(zn, "zero")


def test_zero_mode_float_snn_and_integer_reference_agree_at_T8_on_digits(digits):
    _, d, sub = digits
    zn = apply_neuron_mode(sub, "zero")
    inet = to_int(zn)
    assert all(n.neuron is ZERO for n in inet.nodes)
    for n, z in zip(inet.nodes, zn.nodes):  # an integer pre-charge within one membrane unit of the float one
        assert 0 <= n.precharge <= n.threshold and abs(n.precharge * n.scale - z.precharge) <= n.scale, n.name
    x, y = d.x_test[:N], d.y_test[:N]
    fres = simulate_float(zn, x, [T], labels=y, progress=False, device="cpu")
    trace = reference_simulate(inet, x, T, device="cpu")
    agree = float((trace.predictions == fres.predictions[T]).mean())
    assert agree >= MIN_AGREE, agree
    sres = simulate_float(sub, x, [T], labels=y, progress=False, device="cpu")
    assert fres.accuracy[T] >= sres.accuracy[T] - 0.15, (fres.accuracy[T], sres.accuracy[T])


def test_zero_mode_relays_reemit_their_source_exactly():
    torch.manual_seed(0)
    model = quantize_model(build_model("tiny_resnet", in_channels=1, num_classes=10, input_size=12,
                                       widths=(8, 16)), 2, True)
    sub = to_floatnet(model.eval(), (1, 12, 12), [0.01])
    zn = apply_neuron_mode(sub, "zero")
    relays = [n for n in zn.nodes if n.role == "relay"]
    assert relays, "tiny_resnet must have a delay relay"
    for r in relays:
        src = zn.node(r.inputs[0].source)
        assert r.threshold == RELAY_ALPHA * sub.node(r.name).threshold and r.precharge == 0.0
        assert r.inputs[0].op.weight * src.threshold == pytest.approx(sub.node(r.name).threshold, rel=1e-12)
    x = np.random.default_rng(0).integers(0, 256, (16, 1, 12, 12))
    trace = reference_simulate(to_int(zn), x, T, device="cpu")
    for r in relays:
        src = r.inputs[0].source
        assert np.array_equal(trace.spike_counts[r.name], trace.spike_counts[src]), r.name
        assert trace.spike_counts[src].sum() > 0


def test_convert_refuses_an_unknown_neuron_mode_with_one_line(tmp_path):
    r = CliRunner().invoke(cli, ["convert", str(tmp_path / "q.pt"), "--neuron", "bogus",
                                 "--out", str(tmp_path / "n.nad.h5")])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines == ["error: --neuron bogus: unknown neuron mode; allowed: subtract, zero, negative, accumulate"]
    assert NEURON_MODES == ("subtract", "zero", "negative", "accumulate")  # the pipeline's check reads NEURON_MODES
    assert not list(tmp_path.iterdir())


def _checkpoint(digits, tmp_path):
    model, d, _ = digits
    ck = Checkpoint(kind="qat", model_name="digits_cnn", model_kwargs={"in_channels": 1, "num_classes": 10,
                    "input_size": 8, "widths": (8, 16)}, input_shape=(1, 8, 8), num_classes=10,
                    channel_scale=tuple(d.normalization.channel_scale), state_dict=cpu_state_dict(model),
                    data_fingerprint="x", seed=0, p=2, noise_adaptor=True)
    return save_checkpoint(ck, tmp_path / "q.pt")


@pytest.mark.parametrize("violation", [False, True])
def test_convert_neuron_zero_goes_through_the_fit_check(digits, tmp_path, monkeypatch, violation):
    """With a target whose fit check passes, a zero-mode pair is written; when it reports a violation, the
    normal refusal (exit 2, one line, nothing written)."""
    import na_deploy.hw_targets as hw

    target = _NoStockLifRules()
    if violation:
        target.check_fit = lambda net, timesteps=None: [Violation("features.2", "vth", 1 << 20, "17-bit")]
    monkeypatch.setattr(hw, "get_target", lambda name: target)
    path, out = _checkpoint(digits, tmp_path), tmp_path / "n.nad.h5"
    r = CliRunner().invoke(cli, ["convert", str(path), "--neuron", "zero", "--quiet", "--out", str(out)])
    if violation:
        assert r.exit_code == 2 and "features.2" in r.output and not out.exists(), r.output
        assert not (tmp_path / "n.float.nad.h5").exists()
        return
    assert r.exit_code == 0, r.output
    fnet, inet = load_net(tmp_path / "n.float.nad.h5"), load_net(out)
    assert fnet.meta["neuron_mode"]["mode"] == "zero"
    assert all(n.neuron is ZERO for n in fnet.nodes) and all(n.neuron is ZERO for n in inet.nodes)
    again = convert_checkpoint(path, self_check=False, **mode_of(fnet.meta))  # what a re-derivation (C8) calls
    save_net(again, tmp_path / "again.float.nad.h5")
    assert load_net(tmp_path / "again.float.nad.h5").meta == fnet.meta
    assert compare_nets(again, fnet, "again", "n") is None
    assert mode_of(load_net(tmp_path / "again.float.nad.h5").meta)["neuron_params"] == DEFAULT_ZERO


class _NoStockLifRules(Loihi2Target):
    """Loihi 2 with the fixed point of `to_int` and no fit check, and an export that writes nothing: the
    pipeline's --neuron plumbing, independent of the stock-LIF rules and backend another change adds."""

    def to_fixed_point(self, net, max_timesteps=None):
        return to_int(net, max_timesteps or 256)

    def to_fixed_point_with_report(self, net, max_timesteps=None):
        return self.to_fixed_point(net, max_timesteps), None

    def check_fit(self, net, timesteps=None):
        return []

    def backend(self, name=None, net=None):
        return SimpleNamespace(export=lambda *a, **k: None)


def test_pipeline_neuron_zero_reports_both_modes_side_by_side(tmp_path):
    cfg = PipelineConfig(epochs_fp=1, epochs_qat=1, timesteps=(1, 2, 4), verify_samples=0, eval_samples=40,
                         neuron="zero")
    rep = run_pipeline(cfg, _NoStockLifRules(), tmp_path / "run", log=lambda m: None)
    modes = rep["neuron_modes"]
    assert (modes["chosen"], modes["verified"], rep["config"]["neuron"]) == ("zero", "zero", "zero")
    assert modes["zero"]["params"] == {"mode": "zero", **dataclasses.asdict(DEFAULT_ZERO), "relay_alpha": RELAY_ALPHA}
    assert modes["subtract"]["params"] == {"mode": "subtract"}
    assert modes["zero"]["snn_accuracy"] == rep["snn_accuracy"]  # the exported net is the zero-mode one
    assert modes["zero"]["ann_accuracy"] == modes["subtract"]["ann_accuracy"] == rep["ann_accuracy"]
    for m in ("subtract", "zero"):
        assert set(modes[m]["snn_accuracy"]["integer"]) == {"1", "2", "4"}
    run = tmp_path / "run"
    assert load_net(run / "net.nad.h5").nodes[0].neuron is ZERO
    assert load_net(run / "net_subtract.float.nad.h5").nodes[0].neuron.name == "subtract"
    md = (run / "report.md").read_text()
    assert "| zero, integer SNN |" in md and "| subtract, float SNN |" in md
    with pytest.raises(NaDeployError, match="--neuron bogus: unknown neuron mode; allowed: subtract, zero"):
        PipelineConfig(neuron="bogus").validate()


def test_default_pipeline_config_records_no_neuron_key():
    assert PipelineConfig().neuron is None  # run_pipeline drops the key then: report.json as before


@pytest.mark.lava
def test_pipeline_neuron_zero_runs_on_the_stock_lif_bit_exact_C6(tmp_path):
    """The real Loihi 2 target end to end: zero-mode fixed point within the stock LIF's registers, verify on
    Lava's own bit-accurate LIF (backend lava-lif, chosen for a zero-mode net), equal to the reference."""
    from na_deploy.hw_targets.loihi2 import TARGET

    cfg = PipelineConfig(epochs_fp=2, epochs_qat=1, timesteps=(1, 2, 4), verify_samples=4, verify_timesteps=4,
                         eval_samples=40, neuron="zero")
    rep = run_pipeline(cfg, TARGET, tmp_path / "run", log=lambda m: None)
    v = rep["verify"]
    assert (v["samples"], v["bit_exact"], v["mismatches"]) == (4, True, 0)
    assert v["backend"] == TARGET.backend("lava-lif").label
    assert rep["neuron_modes"]["verified"] == "zero"
    assert TARGET.check_fit(load_net(tmp_path / "run" / "net.nad.h5")) == []
