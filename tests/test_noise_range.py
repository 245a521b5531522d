"""`--noise-range W` (issue 20): the noise adaptor's eps ~ U(-W/2, W/2) during QAT. W = 1 (the paper's, the
default) trains exactly as before and records nothing; another W is recorded in the checkpoint's hparams and in
report.json's config; bad values are refused in one line; `+noise=W` in the --compare grammar.
"""
from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner

from na_deploy.cli.main import cli
from na_deploy.errors import NaDeployError
from na_deploy.training.quantizer import QuantReLU, check_noise_range, set_noise_range

BAD = [0, -1, float("nan"), float("inf"), "x"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_default_eps_is_the_papers_uniform_draw():
    torch.manual_seed(3)
    q = QuantReLU(2).train()
    v = torch.randn(4, 50)
    q(v)
    torch.manual_seed(3)
    torch.randn(4, 50)
    assert q.noise_range == 1.0 and torch.equal(q.last_eps, torch.rand(4, 50) - 0.5)


@pytest.mark.parametrize("w", [0.5, 2.0])
def test_eps_lies_in_minus_w_half_to_w_half(w):
    torch.manual_seed(0)
    q = QuantReLU(2, noise_range=w).train()
    q(torch.zeros(20000))
    eps = q.last_eps
    assert float(eps.min()) >= -w / 2 and float(eps.max()) <= w / 2
    assert float(eps.max()) > 0.45 * w and float(eps.min()) < -0.45 * w  # spans the range, not 1/2 for every W


@pytest.mark.parametrize("bad", BAD)
def test_bad_noise_range_is_refused(bad):
    with pytest.raises(NaDeployError, match="--noise-range .*finite number > 0"):
        check_noise_range(bad)
    with pytest.raises(NaDeployError):
        QuantReLU(2, noise_range=bad)
    with pytest.raises(NaDeployError):
        set_noise_range(torch.nn.Sequential(QuantReLU(2)), bad)


@pytest.fixture(scope="module")
def qat_runs(tmp_path_factory):
    """One fp checkpoint, then 1-epoch QAT without the option, with W = 1 and with W = 0.5 (digits)."""
    from na_deploy.data.arrays import load_dataset
    from na_deploy.training.loop import train_full_precision, train_qat

    d = tmp_path_factory.mktemp("noise_range")
    data = load_dataset(None, seed=0)
    train_full_precision(data, "digits_cnn", epochs=1, seed=0, out=str(d / "fp.pt"), progress=False)
    common = dict(p=2, epochs=1, seed=0, out=None, progress=False)
    plain = train_qat(data, str(d / "fp.pt"), **{**common, "out": str(d / "plain.pt")})
    one = train_qat(data, str(d / "fp.pt"), noise_range=1.0, **common)
    half = train_qat(data, str(d / "fp.pt"), noise_range=0.5, **{**common, "out": str(d / "half.pt")})
    return d, plain, one, half


def test_w1_trains_the_same_weights_as_without_the_option(qat_runs):
    _, plain, one, half = qat_runs
    a, b = plain.checkpoint.state_dict, one.checkpoint.state_dict
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "noise_range" not in plain.checkpoint.hparams and "noise_range" not in one.checkpoint.hparams
    c = half.checkpoint.state_dict
    assert any(not torch.equal(a[k], c[k]) for k in a)  # another W is another training


def test_checkpoint_records_w_and_old_checkpoints_load_with_w1(qat_runs):
    from na_deploy.training.checkpoint import load_checkpoint

    d, *_ = qat_runs
    half = load_checkpoint(d / "half.pt")
    assert half.hparams["noise_range"] == 0.5
    assert {m.noise_range for m in half.build_model().modules() if isinstance(m, QuantReLU)} == {0.5}
    old = load_checkpoint(d / "plain.pt")  # written as before: no noise_range field
    assert "noise_range" not in old.hparams
    assert {m.noise_range for m in old.build_model().modules() if isinstance(m, QuantReLU)} == {1.0}


def test_quantize_cli_refuses_bad_w_in_one_line(tmp_path):
    for bad in ("0", "-2", "nan", "inf"):
        res = run("quantize", "--noise-range", bad, "--out", tmp_path / "q.pt")
        assert res.exit_code == 2 and "--noise-range" in res.output and len(res.output.strip().splitlines()) == 1
    res = run("quantize", "--no-noise-adaptor", "--noise-range", "0.5", "--out", tmp_path / "q.pt")
    assert res.exit_code == 2 and "no effect with --no-noise-adaptor" in res.output
    assert not any(tmp_path.iterdir())


def test_pipeline_cli_refuses_bad_w_and_w_with_compare(tmp_path):
    res = run("pipeline", "--noise-range", "nan", "--out", tmp_path / "r")
    assert res.exit_code != 0 and "--noise-range nan" in res.output
    res = run("pipeline", "--noise-range", "0.5", "--compare", "na", "--out", tmp_path / "r")
    assert res.exit_code != 0 and "--noise-range" in res.output
    assert not (tmp_path / "r").exists()


def test_pipeline_config_records_w_only_when_not_1():
    from na_deploy.hw_targets import get_target
    from na_deploy.pipeline.run import PipelineConfig, config_record

    target = get_target("loihi2")
    assert "noise_range" not in config_record(PipelineConfig(), target)
    assert config_record(PipelineConfig(noise_range=0.5), target)["noise_range"] == 0.5
    with pytest.raises(NaDeployError, match="--noise-range"):
        PipelineConfig(noise_range=math.inf).validate()


def test_compare_grammar_noise_modifier():
    from na_deploy.pipeline.variants import parse_variants

    na, half, two, neg = parse_variants("na,na+noise=0.5,na+noise=2,na+negative+noise=0.5")
    assert na.training.noise_range == 1.0 and na.training.tag == "na"
    assert half.training.noise_range == 0.5 and half.training.tag == "na_noise-0.5"
    assert two.training.tag == "na_noise-2"
    assert neg.training == half.training and neg.inference.neuron == "negative"  # one QAT run shared


@pytest.mark.parametrize("name, why", [("na+noise=0", "finite number > 0"), ("na+noise=-1", "finite number > 0"),
                                       ("na+noise=nan", "finite number > 0"), ("na+noise=x", "finite number > 0"),
                                       ("no-na+noise=2", "needs the noise adaptor"),
                                       ("datta+noise=2", "needs the noise adaptor"),
                                       ("na+noise=1+noise=2", "repeated"), ("na+noise", "unknown modifier")])
def test_compare_grammar_refuses_bad_noise_modifiers(name, why):
    from na_deploy.pipeline.variants import parse_variants

    with pytest.raises(NaDeployError, match=why) as e:
        parse_variants(name)
    assert "\n" not in str(e.value)


def test_compare_trains_each_noise_arm_with_its_w(tmp_path):
    """`--compare na,na+noise=0.5`: the second arm's QAT checkpoint is trained with W = 0.5 (its hparams say so, its
    quantizers draw from U(-1/4, 1/4)) from the same fp weights as the first arm, whose checkpoint records nothing."""
    from na_deploy.data.arrays import load_dataset
    from na_deploy.pipeline.compare import _train
    from na_deploy.pipeline.run import PipelineConfig
    from na_deploy.pipeline.variants import parse_variants
    from na_deploy.training.checkpoint import load_checkpoint

    cfg = PipelineConfig(epochs_fp=1, epochs_qat=1, seed=0)
    data = load_dataset(None, seed=0)
    paths = _train(cfg, data, tmp_path, parse_variants("na,na+noise=0.5"), timer=_no_timer, log=lambda m: None)
    by_w = {tr.noise_range: load_checkpoint(p) for tr, p in paths.items()}
    assert set(by_w) == {1.0, 0.5}
    assert "noise_range" not in by_w[1.0].hparams and by_w[0.5].hparams["noise_range"] == 0.5
    assert {m.noise_range for m in by_w[0.5].build_model().modules() if isinstance(m, QuantReLU)} == {0.5}


def _no_timer(name):
    import contextlib

    return contextlib.nullcontext()
