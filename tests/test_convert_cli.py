"""`na-deploy convert` / `na-deploy simulate` end to end (in-process click runner), and every bad input as a
one-line `error:` with exit code 2 and nothing written.

Checkpoints are real QAT checkpoints (registry digits_cnn, quantize_model, random BN statistics) written with
na_deploy.training.checkpoint. The unsupported-op and MaxPool cases register a small user model in the model registry
(`models.registry._SPECS`, via monkeypatch) because every shipped model converts.
"""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from na_deploy.training.checkpoint import Checkpoint, cpu_state_dict, save_checkpoint
from na_deploy.cli.main import cli
from na_deploy.data.arrays import load_dataset
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.io import load_net
from na_deploy.ir import FloatNet, IntNet
from na_deploy.models import build_model
from na_deploy.training.surgery import quantize_model
from helpers import settle_batchnorm  # tests/helpers.py

KW = {"in_channels": 1, "num_classes": 10, "input_size": 8}


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    return settle_batchnorm(model, seed)


def _save(model: nn.Module, path, name="digits_cnn", kind="qat"):
    extra = {"p": 2, "noise_adaptor": True} if kind == "qat" else {}
    return save_checkpoint(Checkpoint(kind=kind, model_name=name, model_kwargs=dict(KW), input_shape=(1, 8, 8),
                                      num_classes=10, channel_scale=(1 / (255 * 0.3),),
                                      state_dict=cpu_state_dict(model), data_fingerprint="test", seed=0, **extra),
                           path)


def run(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.output


def assert_one_line_error(code, out, *fragments):
    assert code == 2, out
    err = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(err) == 1, out
    for f in fragments:
        assert f in err[0], err[0]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A digits_cnn QAT checkpoint converted by the CLI: (folder, checkpoint, convert output)."""
    d = tmp_path_factory.mktemp("conv")
    torch.manual_seed(0)
    ckpt = _save(_randomize(quantize_model(build_model("digits_cnn", **KW), 2, True)), d / "q.pt")
    code, out = run("convert", ckpt, "--out", d / "net.nad.h5", "--max-timesteps", 64)
    assert code == 0, out
    return d, ckpt, out


def test_convert_writes_intnet_and_floatnet_and_prints_reports(converted):
    d, _, out = converted
    assert "quantization report" in out and "fit check (loihi2): no violations" in out
    inet, fnet = load_net(d / "net.nad.h5"), load_net(d / "net.float.nad.h5")
    assert isinstance(inet, IntNet) and isinstance(fnet, FloatNet)
    assert inet.meta["max_timesteps"] == 64 and inet.meta["made_from"]["file"] == "net.float.nad.h5"
    assert TARGET.check_fit(inet) == []
    for n in fnet.nodes:  # every node row is in the printed quantization report
        assert n.name in out


def test_simulate_reports_accuracy_agreement_noise_plot_and_json(converted):
    d, _, _ = converted
    code, out = run("simulate", d / "net.nad.h5", "--timesteps", "1,2,4", "--samples", 48, "--quiet",
                    "--plot", d / "acc.png", "--json", d / "res.json", "--device", "cpu")
    assert code == 0, out
    assert "quantized ANN accuracy" in out and "occasional noise (integer SNN)" in out
    assert (d / "acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((d / "res.json").read_text())
    assert res["samples"] == 48 and res["timesteps"] == [1, 2, 4]
    for T in ("1", "2", "4"):
        for kind in ("float", "integer"):
            assert 0.0 <= res["snn_accuracy"][kind][T] <= 1.0
        assert 0.0 <= res["prediction_agreement_float_vs_integer"][T] <= 1.0
    assert res["prediction_agreement_float_vs_integer"]["4"] >= 0.8
    assert set(res["occasional_noise"]) == {"integer", "float"}
    # the integer column is exactly what the reference simulator gives on the same samples
    ds = load_dataset(None, seed=0)
    tr = TARGET.reference_simulate(load_net(d / "net.nad.h5"), ds.x_test[:48], 4, device="cpu")
    assert res["snn_accuracy"]["integer"]["4"] == float((tr.predictions == ds.y_test[:48]).mean())


def test_simulate_refuses_T_above_max_timesteps_and_bad_timesteps(converted):
    d, _, _ = converted
    assert_one_line_error(*run("simulate", d / "net.nad.h5", "--timesteps", "8,65"), "max_timesteps 64")
    assert_one_line_error(*run("simulate", d / "net.nad.h5", "--timesteps", "a,2"), "--timesteps")
    assert_one_line_error(*run("simulate", d / "net.nad.h5", "--samples", 0), "--samples")


def test_simulate_bad_net_files(converted, tmp_path):
    d, _, _ = converted
    good = (d / "net.nad.h5").read_bytes()
    garbage = tmp_path / "garbage.nad.h5"
    garbage.write_bytes(b"not an hdf5 file at all" * 10)
    assert_one_line_error(*run("simulate", garbage), str(garbage), "HDF5")
    trunc = tmp_path / "trunc.nad.h5"
    trunc.write_bytes(good[: len(good) // 2])
    assert_one_line_error(*run("simulate", trunc), str(trunc))
    old = tmp_path / "old.nad.h5"
    old.write_bytes(good)
    with h5py.File(old, "r+") as f:
        f.attrs["format_version"] = 99
    assert_one_line_error(*run("simulate", old), "format_version 99")
    assert_one_line_error(*run("simulate", d / "net.float.nad.h5"), "is a FloatNet")
    assert_one_line_error(*run("simulate", tmp_path / "missing.nad.h5"), "no such file")


def test_simulate_float_sibling_missing_or_not_matching(converted, tmp_path):
    d, ckpt, _ = converted
    lone = tmp_path / "lone.nad.h5"
    lone.write_bytes((d / "net.nad.h5").read_bytes())
    assert_one_line_error(*run("simulate", lone), "FloatNet", "missing")
    # a FloatNet of another conversion (different weights) is refused by its recorded SHA-256
    m = _randomize(quantize_model(build_model("digits_cnn", **KW), 2, True), seed=5)
    other = _save(m, tmp_path / "other.pt")
    code, out = run("convert", other, "--out", tmp_path / "o.nad.h5", "--quiet")
    assert code == 0, out
    assert_one_line_error(*run("simulate", d / "net.nad.h5", "--float-net", tmp_path / "o.float.nad.h5"),
                          "SHA-256")


def test_simulate_data_with_wrong_image_shape(converted, tmp_path):
    d, _, _ = converted
    npz = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, x_train=rng.integers(0, 256, (20, 1, 6, 6), dtype=np.uint8), y_train=np.arange(20) % 3,
             x_test=rng.integers(0, 256, (6, 1, 6, 6), dtype=np.uint8), y_test=np.arange(6) % 3)
    assert_one_line_error(*run("simulate", d / "net.nad.h5", "--data", npz), "(1, 6, 6)", "(1, 8, 8)")


def test_convert_refuses_fp_checkpoint_and_garbage(tmp_path):
    fp = _save(_randomize(build_model("digits_cnn", **KW)), tmp_path / "fp.pt", kind="fp")
    assert_one_line_error(*run("convert", fp, "--out", tmp_path / "n.nad.h5"), "not a QAT model")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    assert_one_line_error(*run("convert", bad, "--out", tmp_path / "n.nad.h5"), str(bad))
    assert_one_line_error(*run("convert", tmp_path / "nope.pt", "--out", tmp_path / "n.nad.h5"), "not found")
    assert_one_line_error(*run("convert", fp, "--out", tmp_path / "n.nad.h5", "--target", "loihi9"), "loihi9")
    assert not list(tmp_path.glob("*.h5"))


def test_C5_convert_refuses_net_that_does_not_fit_and_writes_nothing(converted, tmp_path):
    """A static bound over 10**8 steps forces the first layer's scale so coarse that its threshold
    rounds to 0: FitError naming node, quantity and limit; no file written."""
    _, ckpt, _ = converted
    code, out = run("convert", ckpt, "--out", tmp_path / "n.nad.h5", "--max-timesteps", 10 ** 8)
    assert_one_line_error(code, out, "node features.2", "threshold", ">= 1")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------- user models the converter refuses
class _MaxPoolNet(nn.Module):
    """torch.max_pool2d (functional) survives quantize_model, so the converter must refuse it."""

    def __init__(self, in_channels=1, num_classes=10, input_size=8):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * (input_size // 2) ** 2, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(torch.max_pool2d(self.relu(self.bn(self.conv(x))), 2), 1))


class _GatedNet(nn.Module):
    """An elementwise product of two activations: not expressible as synapses into an IF neuron."""

    def __init__(self, in_channels=1, num_classes=10, input_size=8):
        super().__init__()
        self.a = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.b = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.ra, self.rb = nn.ReLU(), nn.ReLU()
        self.fc = nn.Linear(4 * input_size ** 2, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.ra(self.a(x)) * self.rb(self.b(x)), 1))


@pytest.mark.parametrize("cls,fragments", [(_MaxPoolNet, ("MaxPool",)), (_GatedNet, ("mul",))])
def test_convert_refuses_unsupported_ops_by_name(monkeypatch, tmp_path, cls, fragments):
    from na_deploy.models import registry

    name = cls.__name__.lower()
    monkeypatch.setitem(registry._SPECS, name, registry.ModelSpec(cls, 4, 2, 8, "test model"))
    torch.manual_seed(0)
    ckpt = _save(quantize_model(cls(**KW), 2, True), tmp_path / "m.pt", name=name)
    code, out = run("convert", ckpt, "--out", tmp_path / "n.nad.h5")
    assert_one_line_error(code, out, *fragments)
    assert not list(tmp_path.glob("*.h5"))

