"""Issue 19: bring your own network. `--model torchvision:NAME | package.module:builder | file.py:builder`,
`--weights FILE` (strict, one-line key report), `--reset-head`; checkpoints record the spec and the builder's
SHA-256 and refuse a rebuild from a changed file (docs/contract.md C8). Every bad input: one line, exit 2,
nothing written."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from na_deploy.cli.main import cli
from na_deploy.errors import ModelError
from na_deploy.training.checkpoint import load_checkpoint
from na_deploy.training.model_spec import build_external, parse_spec

BUILDER = '''
import torch.nn as nn
def build(num_classes, in_channels=3):
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, num_classes))
def not_a_module(num_classes):
    return 3
'''


@pytest.fixture()
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez("rgb.npz", x_train=rng.integers(0, 256, (20, 3, 8, 8), dtype=np.uint8), y_train=np.arange(20) % 4,
             x_test=rng.integers(0, 256, (8, 3, 8, 8), dtype=np.uint8), y_test=np.arange(8) % 4)
    (tmp_path / "mynet.py").write_text(BUILDER)
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    return tmp_path


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_spec_forms_parse():
    assert parse_spec("resnet18").kind == "registry"
    assert parse_spec("torchvision:resnet18").kind == "torchvision"
    assert parse_spec("pkg.mod:build").kind == "module"
    assert parse_spec("a/b.py:build").kind == "file"


def test_torchvision_builder_gets_the_class_count():
    pytest.importorskip("torchvision")
    model = build_external("torchvision:resnet18", 3, 7, 32)
    assert model.fc.out_features == 7


def test_file_builder_trains_records_sha_and_converts(work):
    r = _run("train", "--model", "mynet.py:build", "--data", "rgb.npz", "--epochs", "1", "--out", "fp.pt", "--quiet")
    assert r.exit_code == 0, r.output
    ck = load_checkpoint("fp.pt")
    assert ck.model_name == "mynet.py:build" and len(ck.model_source["sha256"]) == 64
    r = _run("quantize", "--from", "fp.pt", "--data", "rgb.npz", "--epochs", "1", "--out", "q.pt", "--quiet")
    assert r.exit_code == 0, r.output
    r = _run("convert", "q.pt", "--out", "net.nad.h5")
    assert r.exit_code == 0, r.output
    (work / "mynet.py").write_text(BUILDER + "\n# changed\n")
    r = _run("convert", "q.pt", "--out", "net2.nad.h5")
    assert r.exit_code == 2 and "changed since the checkpoint" in r.output and not (work / "net2.nad.h5").exists()


@pytest.mark.parametrize("spec,message", [
    ("mynet.py:nope", "has no callable 'nope'"),
    ("mynet.py:not_a_module", "returned int, not an nn.Module"),
    ("broken.py:build", "importing broken.py failed (RuntimeError: boom at import)"),
    ("nosuch.module:build", "importing nosuch.module failed"),
    ("missing.py:build", "file missing.py not found"),
])
def test_bad_builders_are_one_line_exit_2_nothing_written(work, spec, message):
    r = _run("train", "--model", spec, "--data", "rgb.npz", "--epochs", "1", "--out", "x.pt", "--quiet")
    assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (work / "x.pt").exists()


def _weights(path, num_classes=4, drop=None, extra=None):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, num_classes))
    sd = model.state_dict()
    if drop:
        sd.pop(drop)
    if extra:
        sd[extra] = torch.zeros(1)
    torch.save(sd, path)


@pytest.mark.parametrize("kw,message", [
    ({"drop": "0.bias"}, "missing 1 key(s): 0.bias"),
    ({"extra": "head.w"}, "unexpected 1: head.w"),
    ({"num_classes": 9}, "mis-shaped 2: 4.weight (9, 64) vs model (4, 64)"),
])
def test_mismatched_weights_are_named(work, kw, message):
    _weights("w.pt", **kw)
    r = _run("quantize", "--model", "mynet.py:build", "--weights", "w.pt", "--data", "rgb.npz", "--epochs", "1",
             "--out", "q.pt", "--quiet")
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (work / "q.pt").exists() and not (work / "q-fp.pt").exists()


def test_reset_head_reinitialises_only_the_classifier(work):
    _weights("w.pt", num_classes=9)
    r = _run("quantize", "--model", "mynet.py:build", "--weights", "w.pt", "--reset-head", "--data", "rgb.npz",
             "--epochs", "1", "--out", "q.pt", "--quiet")
    assert r.exit_code == 0, r.output
    assert "--reset-head: final classifier '4' re-initialised (9 -> 4 classes)" in r.output
    fp = load_checkpoint("q-fp.pt")
    assert fp.epochs == 0 and fp.model_source["weights"]["file"] == "w.pt"
    w = torch.load("w.pt", weights_only=True)
    assert torch.equal(fp.state_dict["0.weight"], w["0.weight"])


def test_weights_with_resume_or_reset_head_alone_are_refused(work):
    r = _run("train", "--reset-head", "--data", "rgb.npz", "--out", "x.pt")
    assert r.exit_code == 2 and "--reset-head: needs --weights" in r.output


def test_unsupported_op_refused_at_quantize_time():
    from na_deploy.training.surgery import quantize_model
    with pytest.raises(ModelError, match=r"^1: activation GELU is not supported"):
        quantize_model(nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU()), 2)
