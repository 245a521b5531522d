"""Datta et al.'s BN-bias shift (na_deploy/convert/bias_shift.py, `convert --bn-bias-shift T`): the pre-charge v0 of
every layer node moves into its bias as v0 / T (th / 2T in mode subtract), relays keep theirs; for a constant
input (the first layer) the shifted net fires exactly as the pre-charged one over T steps (the derivation in the
module doc); the shift is recorded in meta and re-derives (C8); a bad T is refused in one line."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from na_deploy.training.checkpoint import save_checkpoint
from na_deploy.cli.main import cli
from na_deploy.convert import convert_checkpoint, to_floatnet
from na_deploy.convert.bias_shift import apply_bias_shift, bias_shift_of
from na_deploy.errors import NaDeployError
from na_deploy.simulate.float_snn import simulate_float
from na_deploy.verify.provenance import compare_nets
from helpers import ridge_digits_cnn  # tests/helpers.py


@pytest.fixture(scope="module")
def digits():
    model, d = ridge_digits_cnn(0, grid=20)
    return model, d, to_floatnet(model, d.input_shape, d.normalization.channel_scale, name="digits_cnn")


@pytest.mark.parametrize("T", [2, 8])
def test_shift_moves_the_precharge_and_first_layer_counts_are_unchanged(digits, T):
    _, d, net = digits
    shifted = apply_bias_shift(net, T)
    for a, b in zip(net.nodes, shifted.nodes):
        assert b.precharge == 0.0 and np.allclose(b.bias, a.bias + a.threshold / (2 * T), rtol=0, atol=1e-12)
    assert shifted.meta["bias_shift"]["timesteps"] == T
    x = d.x_test[:64]
    first = net.nodes[0].name
    c0 = simulate_float(net, x, [T], count_timesteps=[T], dtype=torch.float64, progress=False).counts[T][first]
    c1 = simulate_float(shifted, x, [T], count_timesteps=[T], dtype=torch.float64, progress=False).counts[T][first]
    assert c0.sum() > 0 and np.array_equal(c0, c1)


def test_relays_keep_their_precharge():
    from na_deploy.models import build_model
    from na_deploy.training.surgery import quantize_model

    torch.manual_seed(0)
    m = quantize_model(build_model("tiny_resnet", 1, 10, 28), p=2).eval()
    net = to_floatnet(m, (1, 28, 28), np.ones(1) / 255, name="tiny_resnet")
    shifted = apply_bias_shift(net, 4)
    relays = [(a, b) for a, b in zip(net.nodes, shifted.nodes) if a.role == "relay"]
    assert relays and all(b.precharge == a.precharge and np.array_equal(b.bias, a.bias) for a, b in relays)


def test_recorded_and_re_derived_and_cli(digits, tmp_path):
    from na_deploy.training.checkpoint import Checkpoint, cpu_state_dict

    model, d, _ = digits
    ck = Checkpoint(kind="qat", model_name="digits_cnn", model_kwargs={"in_channels": 1, "num_classes": 10,
                    "input_size": 8, "widths": (8, 16)}, input_shape=(1, 8, 8), num_classes=10,
                    channel_scale=tuple(d.normalization.channel_scale), state_dict=cpu_state_dict(model),
                    data_fingerprint="x", seed=0, p=2, noise_adaptor=True)
    ckpt = save_checkpoint(ck, tmp_path / "q.pt")
    net = convert_checkpoint(ckpt, bias_shift_timesteps=4)
    assert bias_shift_of(net.meta) == {"bias_shift_timesteps": 4} and bias_shift_of({}) == {}
    assert compare_nets(net, convert_checkpoint(ckpt, **bias_shift_of(net.meta)), "a", "b", meta=True) is None
    with pytest.raises(NaDeployError, match="timestep"):
        apply_bias_shift(net, 0)
    r = CliRunner().invoke(cli, ["convert", str(ckpt), "--bn-bias-shift", "0", "--out", str(tmp_path / "n.nad.h5")])
    assert r.exit_code == 2 and "--bn-bias-shift 0" in r.output and not (tmp_path / "n.nad.h5").exists(), r.output
