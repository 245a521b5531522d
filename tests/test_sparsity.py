"""Datta et al.'s fine-grained L1 activation regularizer (na_deploy/training/l1_sparsity.py, `quantize --l1-sparsity`).

R is exactly the mean quantized level per neuron (= spikes per neuron per p steps of the SNN); QAT with λ > 0
from the same full-precision checkpoint and seed ends with fewer active levels than λ = 0; λ travels in the QAT
checkpoint (so --resume keeps it) and is absent at 0 (default checkpoints keep their bytes); a negative or
non-finite λ is refused in one line, exit 2, nothing written.
"""
from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from na_deploy.cli.main import cli
from na_deploy.data.arrays import load_dataset
from na_deploy.errors import NaDeployError
from na_deploy.training.quantizer import QuantReLU
from na_deploy.training.l1_sparsity import ActivationL1, check_l1
from na_deploy.training.loop import train_full_precision, train_qat


def test_penalty_is_the_mean_quantized_level_per_neuron():
    torch.manual_seed(0)
    a, b = QuantReLU(p=2, step_size=0.5, noise_adaptor=False), QuantReLU(p=3, step_size=0.25, noise_adaptor=False)
    model = nn.Sequential(a, nn.Flatten(), nn.Linear(6, 4), b).eval()
    x = torch.randn(5, 2, 3)
    with ActivationL1(model) as reg:
        model(x)
        r = reg.penalty()
        h = model[2](model[1](model[0](x)))
        levels = (torch.floor(torch.clamp(x / 0.5, 0, 2) + 0.5).sum()
                  + torch.floor(torch.clamp(h / 0.25, 0, 3) + 0.5).sum())
        assert math.isclose(float(r.detach()), float(levels.detach()) / (5 * (6 + 4)), rel_tol=1e-6)
    assert not a._forward_hooks and not b._forward_hooks  # hooks removed on exit
    with pytest.raises(NaDeployError, match="QuantReLU layers"):
        ActivationL1(nn.Linear(2, 2))


def _mean_level(model, dataset, norm) -> float:
    model.eval()
    with torch.no_grad(), ActivationL1(model) as reg:
        model(norm.apply(torch.as_tensor(dataset.x_test[:200])))
        return float(reg.penalty())


def test_l1_lowers_activity_from_the_same_checkpoint_and_is_recorded(tmp_path):
    ds = load_dataset(None)
    fp = train_full_precision(ds, "digits_cnn", epochs=3, seed=0, progress=False).checkpoint
    plain = train_qat(ds, fp, epochs=3, seed=0, progress=False)
    sparse = train_qat(ds, fp, epochs=3, seed=0, progress=False, l1_sparsity=2.0, out=str(tmp_path / "q.pt"))
    r0, r1 = _mean_level(plain.model, ds, fp.normalization), _mean_level(sparse.model, ds, fp.normalization)
    assert r1 < 0.8 * r0, (r0, r1)  # measured: see benchmarks/experiments/measure_l1_sparsity.py
    assert sparse.checkpoint.hparams["l1_sparsity"] == 2.0 and "l1_sparsity" not in plain.checkpoint.hparams


@pytest.mark.parametrize("bad", ["-0.1", "nan", "inf"])
def test_bad_lambda_is_refused_in_one_line(tmp_path, bad):
    with pytest.raises(NaDeployError):
        check_l1(float(bad))
    out = tmp_path / "q.pt"
    r = CliRunner().invoke(cli, ["quantize", "--l1-sparsity", bad, "--epochs", "1", "--fp-epochs", "1", "--quiet",
                                 "--out", str(out)])
    assert r.exit_code == 2 and "--l1-sparsity" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not list(tmp_path.iterdir())
