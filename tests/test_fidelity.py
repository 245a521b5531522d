"""Fidelity (na_deploy.verify.fidelity): the integer SNN (Loihi 2 reference) against the float SNN and the quantized
ANN.

An honest IntNet passes DEFAULT_MIN_AGREEMENT; the issue's tampering (one node's weights negated, its threshold
set to 3) fails it with one line naming the tampered node; relays are reported with their role; an IntNet of
another net fails the per-node check. The digits net is trained-looking without SGD (random convs, BN statistics
and step sizes from the data, the readout fitted by ridge regression), as in tests/test_float_sim.py.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from na_deploy.simulate.ann import ann_forward, argmax_lowest
from na_deploy.convert import to_floatnet
from na_deploy.data.arrays import load_digits_dataset
from na_deploy.errors import NaDeployError, SimulationError
from na_deploy.verify.fidelity import (DEFAULT_MAX_NODE_CHANGE, DEFAULT_MIN_AGREEMENT, FidelityError, FidelityReport,
                                       fidelity)
from na_deploy.simulate.float_snn import simulate_float
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.models import build_model
from na_deploy.training.surgery import quantize_model
from helpers import ridge_digits_cnn, tampered  # tests/helpers.py

T = 8
N = 120


def _digits_floatnet(seed: int, widths=(8, 16)):
    model, d = ridge_digits_cnn(seed, grid=20, widths=widths)
    return to_floatnet(model, d.input_shape, d.normalization.channel_scale, name="digits_cnn")


@pytest.fixture(scope="module")
def digits():
    d = load_digits_dataset(0)
    fnet = _digits_floatnet(0)
    return fnet, TARGET.to_fixed_point(fnet, max_timesteps=16), d.x_test[:N], d.y_test[:N]


def test_honest_net_passes_and_the_report_is_what_the_simulators_say(digits):
    fnet, inet, x, y = digits
    rep = fidelity(fnet, inet, TARGET, x, T, labels=y, device="cpu")
    assert rep.failures() == [] and rep.failures(max_node_change=DEFAULT_MAX_NODE_CHANGE) == []
    assert rep.agreement_float_snn >= DEFAULT_MIN_AGREEMENT + 0.05  # a margin, not a coin toss
    ref = TARGET.reference_simulate(inet, x, T)
    fs = simulate_float(fnet, x, [T], device="cpu", count_timesteps=[T], progress=False)
    ann = argmax_lowest(ann_forward(fnet, x, device="cpu")[0]).numpy()
    assert rep.samples == N and rep.timesteps == T
    assert rep.agreement_float_snn == np.mean(ref.predictions == fs.predictions[T])
    assert rep.agreement_ann == np.mean(ref.predictions == ann)
    assert rep.disagreements == list(np.flatnonzero(ref.predictions != fs.predictions[T]))
    assert rep.accuracy == {"integer_snn": np.mean(ref.predictions == y), "float_snn": np.mean(fs.predictions[T] == y),
                            "ann": np.mean(ann == y)}
    assert [L["node"] for L in rep.layers] == [n.name for n in inet.nodes]
    for L, n in zip(rep.layers, inet.nodes):
        a, b = ref.spike_counts[n.name], fs.counts[T][n.name]
        assert L["role"] == "layer" and L["neurons"] == int(np.prod(n.shape))
        assert L["share_differing"] == np.mean(a != b) and L["mean_abs_count_difference"] == np.mean(np.abs(a - b))
    assert 0 < rep.layers[-1]["share_differing"] < 0.3  # rounding moves a few neurons, not most
    json.dumps(rep.to_dict())
    given = fidelity(fnet, inet, TARGET, x, T, labels=y, device="cpu", trace=ref)  # verify's trace, reused
    assert given.to_dict() == rep.to_dict()


@pytest.mark.parametrize("k", [0, 1, 2])
def test_tampered_node_fails_with_one_line_naming_it(digits, k):
    fnet, inet, x, _ = digits
    name = inet.nodes[k].name
    rep = fidelity(fnet, tampered(inet, name), TARGET, x, T, device="cpu")
    assert rep.agreement_float_snn < 0.3 and rep.origin()["node"] == name
    (msg,) = rep.failures()
    assert "\n" not in msg and msg.startswith("fidelity: the integer SNN agrees with the float SNN on ")
    assert f"of {N} samples at T={T} (minimum 90.0%); largest change in node {name}:" in msg, msg
    assert any(f"node {name}:" in m for m in rep.failures(1.0, max_node_change=DEFAULT_MAX_NODE_CHANGE))


def test_intnet_of_another_net_fails_the_node_check(digits):
    fnet, inet, x, _ = digits
    other = TARGET.to_fixed_point(_digits_floatnet(1), max_timesteps=16)  # same architecture, other weights
    rep = fidelity(fnet, other, TARGET, x, T, device="cpu")
    first = inet.nodes[0].name
    assert rep.layers[0]["change_over_inputs"] > 0.5 and rep.origin()["node"] == first
    lines = rep.failures(0.0, max_node_change=DEFAULT_MAX_NODE_CHANGE)
    assert len(lines) == 1 and f"node {first}:" in lines[0] and "was the IntNet made from this FloatNet?" in lines[0]


def test_relays_are_reported_with_their_role():
    torch.manual_seed(0)
    model = quantize_model(build_model("tiny_resnet", 1, 10, 12, widths=(8, 16)), 2, True, step_size=0.5).eval()
    fnet = to_floatnet(model, (1, 12, 12), [1 / (255 * 0.3)])
    inet = TARGET.to_fixed_point(fnet, max_timesteps=8)
    x = torch.randint(0, 256, (8, 1, 12, 12), generator=torch.Generator().manual_seed(4)).numpy().astype(np.uint8)
    rep = fidelity(fnet, inet, TARGET, x, 4, device="cpu")
    by = {L["node"]: L for L in rep.layers}
    relays = [n for n in inet.nodes if n.role == "relay"]
    assert relays and [L["role"] for L in rep.layers] == [n.role for n in inet.nodes]
    for n in relays:  # a relay copies its source in both SNNs: it adds no difference of its own
        src = by[n.inputs[0].source]
        assert by[n.name]["share_differing"] == src["share_differing"] and by[n.name]["change_over_inputs"] == 0
    report = FidelityReport(samples=8, timesteps=4, agreement_float_snn=0.5, agreement_ann=0.5, layers=[
        {**by[relays[0].name], "share_differing": 0.9, "change_over_inputs": 0.9}])
    assert "(a delay relay)" in report.failures()[0]


def test_requests_that_cannot_be_answered_are_one_line_errors(digits):
    fnet, inet, x, y = digits
    narrow = _digits_floatnet(0, widths=(4, 16))
    cases = [
        (lambda: fidelity(narrow, inet, TARGET, x, T), FidelityError, "features.2 (4, 8, 8) in the FloatNet"),
        (lambda: fidelity(inet, inet, TARGET, x, T), FidelityError, "needs a FloatNet and an IntNet"),
        (lambda: fidelity(fnet, inet, TARGET, x, 17), SimulationError, "17"),
        (lambda: fidelity(fnet, inet, TARGET, x.astype(np.float32), T), SimulationError, "dtype float32"),
        (lambda: fidelity(fnet, inet, TARGET, x, T, labels=y[:3]), FidelityError, "3 labels for 120 samples"),
        (lambda: fidelity(fnet, inet, TARGET, x, T, trace=TARGET.reference_simulate(inet, x[:5], T)), FidelityError,
         "the given trace is of 5 samples at T=8"),
        (lambda: FidelityReport(1, 1, 1.0, 1.0, []).failures(1.5), FidelityError, "min_agreement: must be a share"),
        (lambda: FidelityReport(1, 1, 1.0, 1.0, []).failures(0.9, "x"), FidelityError, "max_node_change"),
    ]
    for fn, err, fragment in cases:
        with pytest.raises(err) as e:
            fn()
        assert isinstance(e.value, NaDeployError) and "\n" not in str(e.value) and fragment in str(e.value), e.value
