"""`pipeline --compare`: the variant grammar, its one-line errors (exit 2, nothing written), and a small run
whose tables agree with the checkpoints and the simulators they claim to come from."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from na_deploy.cli.main import cli
from na_deploy.pipeline.variants import Inference, Training, parse_variant, parse_variants
from na_deploy.errors import NaDeployError


def test_variant_grammar():
    v = parse_variant("na+negative", 0.5, 2)
    assert v.training == Training(True, 0.0) and v.inference == Inference("negative", 0, False)
    d = parse_variant("datta+l1", 0.25, 2)
    assert d.training == Training(False, 0.25) and d.inference == Inference("accumulate", 0, True)
    o = parse_variant("na+offset", 0.5, 3)
    assert o.inference.offset_steps == 3 and o.inference.neuron == "subtract"
    assert parse_variant("no-na", 0.5, 2).training.tag == "no-na"
    assert d.training.tag == "no-na_l1-0.25"
    # variants that differ only at inference share their training (one QAT run)
    vs = parse_variants("na,na+negative,na+offset,no-na", 0.5, 2)
    assert len({v.training for v in vs}) == 2


@pytest.mark.parametrize("text, l1, rho, msg", [
    ("na,bogus", 0.5, 2, "unknown base 'bogus'"),
    ("na+fast", 0.5, 2, "unknown modifier 'fast'"),
    ("na,na", 0.5, 2, "named twice"),
    ("na+negative+accumulate", 0.5, 2, "one neuron mode per variant"),
    ("datta+offset", 0.5, 2, "offset calibration runs on subtract-mode nets only"),
    ("na+l1", -1.0, 2, "must be >= 0"),
    ("na+l1", 0.0, 2, "needs lambda > 0"),
    ("na+offset", 0.5, 0, "must be >= 1"),
    ("", 0.5, 2, "no variant"),
])
def test_variant_errors(text, l1, rho, msg):
    with pytest.raises(NaDeployError, match=msg):
        parse_variants(text, l1, rho)


@pytest.mark.parametrize("args, msg", [
    (["--compare", "na,nope"], "unknown base 'nope'"),
    (["--compare", "na+l1", "--compare-l1", "-0.5"], "must be >= 0"),
    (["--compare", "na", "--neuron", "zero"], "cannot be combined with --neuron"),
])
def test_compare_cli_errors_write_nothing(tmp_path, args, msg):
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["pipeline", *args, "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert msg in r.output and len(r.output.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "run.partial").exists()


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "run"
    r = CliRunner().invoke(cli, ["pipeline", "--compare", "na,no-na,na+zero", "--epochs-fp", "2", "--epochs-qat", "1",
                                 "--timesteps", "1,2", "--verify-samples", "2", "--verify-timesteps", "2",
                                 "--eval-samples", "60", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out, json.loads((out / "compare.json").read_text())


@pytest.mark.lava
def test_compare_run_writes_tables(compare_run):
    out, comp = compare_run
    assert (out / "COMPLETE").exists() and (out / "compare_accuracy.png").stat().st_size > 0
    assert comp["order"] == ["na", "no-na", "na+zero"]
    md = (out / "compare.md").read_text()
    for name in comp["order"]:
        assert f"| {name} |" in md
    # two QAT runs only: na and na+zero share one checkpoint (and so their quantized ANN)
    assert sorted(p.name for p in out.glob("qat_*.ckpt")) == ["qat_na.ckpt", "qat_no-na.ckpt"]
    v = comp["variants"]
    assert v["na"]["training"]["checkpoint"] == v["na+zero"]["training"]["checkpoint"] == "qat_na.ckpt"
    assert v["na"]["ann_accuracy"] == v["na+zero"]["ann_accuracy"]
    for name in comp["order"]:
        assert v[name]["verify"]["bit_exact"] is True, v[name]["verify"]
    assert v["na+zero"]["verify"]["backend"] == "lava-lif" and v["na"]["verify"]["backend"] == "lava"


@pytest.mark.lava
def test_compare_numbers_are_the_simulators(compare_run):
    """The table's integer accuracy and spikes are the reference's on that variant's net (re-derived here)."""
    from na_deploy.data.arrays import load_dataset
    from na_deploy.hw_targets import get_target
    from na_deploy.pipeline.compare import convert_variant

    out, comp = compare_run
    target = get_target("loihi2")
    data = load_dataset(None, seed=0)
    x, y = data.x_test[:60], data.y_test[:60]
    _, inet = convert_variant(out / "qat_na.ckpt", Inference("zero"), target, 2)
    traces = target.reference_simulate_multi(inet, x, [1, 2], progress=False)
    row = comp["variants"]["na+zero"]
    for T in (1, 2):
        assert row["integer"][str(T)] == float((traces[T].predictions == y).mean())
        spikes = sum(int(np.asarray(c).sum()) for c in traces[T].spike_counts.values()) / len(y)
        assert row["spikes_per_inference"][str(T)] == spikes


@pytest.mark.lava
@pytest.mark.parametrize("inf", [Inference("subtract"), Inference("accumulate"), Inference("subtract", 2),
                                 Inference("negative")])
def test_steps_per_inference_is_the_lava_slot(inf):
    """The table's "time steps per inference" is the Lava backend's measured per-sample slot."""
    from na_deploy.convert import to_floatnet
    from na_deploy.hw_targets import get_target
    from na_deploy.ir.offset_calibration import steps_per_inference
    from helpers import ridge_digits_cnn  # tests/helpers.py

    target = get_target("loihi2")
    model, d = ridge_digits_cnn(widths=(2, 4), grid=5)
    fnet = to_floatnet(model, d.input_shape, d.normalization.channel_scale, name="digits_cnn", neuron=inf.neuron,
                       offset_steps=inf.offset_steps)
    inet = target.to_fixed_point(fnet, max_timesteps=8)
    trace = target.backend("lava").run(inet, d.x_test[:1], 3)
    assert trace.extra["slot_steps"] == steps_per_inference(inet, 3)
