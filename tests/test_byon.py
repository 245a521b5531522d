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


# ------------------------------------------------------------------------------- pipeline --weights (issue 19)
GELU_BUILDER = '''
import torch.nn as nn
def build(num_classes, in_channels=3):
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.GELU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, num_classes))
'''
PIPE = ("--data", "rgb.npz", "--epochs-qat", "1", "--timesteps", "1,2", "--verify-samples", "0")


def test_pipeline_starts_from_the_weights_and_records_them(work):
    import hashlib
    import json

    _weights("w.pt")
    r = _run("pipeline", "--model", "mynet.py:build", "--weights", "w.pt", "--epochs-fp", "0",
             "--compare-no-noise-adaptor", *PIPE, "--out", "run")
    assert r.exit_code == 0, r.output
    report = json.loads((work / "run" / "report.json").read_text())
    config = report["config"]
    assert config["weights"] == "w.pt" and config["epochs_fp"] == 0 and "no_noise_adaptor" in report
    assert config["weights_sha256"] == hashlib.sha256((work / "w.pt").read_bytes()).hexdigest()
    fp = load_checkpoint(work / "run" / "fp.ckpt")
    w = torch.load("w.pt", weights_only=True)
    assert fp.epochs == 0 and all(torch.equal(fp.state_dict[k], w[k]) for k in w)


def test_pipeline_without_weights_records_no_weights_keys(work):
    import json

    r = _run("pipeline", "--model", "mynet.py:build", "--epochs-fp", "1", *PIPE, "--out", "run")
    assert r.exit_code == 0, r.output
    config = json.loads((work / "run" / "report.json").read_text())["config"]
    assert not {"weights", "weights_sha256", "reset_head"} & set(config)


def test_every_compare_arm_starts_from_the_weights(work):
    import json

    _weights("w.pt", num_classes=9)
    r = _run("pipeline", "--compare", "na,no-na", "--model", "mynet.py:build", "--weights", "w.pt", "--reset-head",
             "--epochs-fp", "0", *PIPE, "--out", "cmp")
    assert r.exit_code == 0, r.output
    assert "--reset-head: final classifier '4' re-initialised (9 -> 4 classes)" in r.output
    fp = load_checkpoint(work / "cmp" / "fp.ckpt")
    w = torch.load("w.pt", weights_only=True)
    assert torch.equal(fp.state_dict["0.weight"], w["0.weight"])
    assert {ck.hparams.get("pretrained") for ck in [fp]} == {True}
    cc = json.loads((work / "cmp" / "compare.json").read_text())["command_config"]
    assert cc["weights"] == "w.pt" and cc["reset_head"] is True and len(cc["weights_sha256"]) == 64


@pytest.mark.parametrize("args,message", [
    (["--model", "mynet.py:nope"], "--model mynet.py:nope: mynet.py has no callable 'nope'"),
    (["--model", "broken.py:build"], "importing broken.py failed (RuntimeError: boom at import)"),
    (["--model", "mynet.py:not_a_module"], "returned int, not an nn.Module"),
    (["--model", "gelu.py:build"], "--model gelu.py:build: 1: activation GELU is not supported"),
    (["--model", "mynet.py:build", "--weights", "missing.pt"], "missing 1 key(s): 0.bias"),
    (["--model", "mynet.py:build", "--weights", "unexpected.pt"], "unexpected 1: head.w"),
    (["--model", "mynet.py:build", "--weights", "shape.pt"], "mis-shaped 2: 4.weight (9, 64) vs model (4, 64)"),
    (["--model", "mynet.py:build", "--weights", "nofile.pt"], "--weights nofile.pt: file not found"),
    (["--timesteps", "1,8388608"], "T = 8388608 exceeds 2**23-1"),
])
@pytest.mark.parametrize("mode", [[], ["--compare", "na,no-na"], ["--seeds", "0,1"]])
def test_pipeline_bad_input_is_one_line_exit_2_nothing_written(work, args, message, mode):
    (work / "gelu.py").write_text(GELU_BUILDER)
    _weights("missing.pt", drop="0.bias")
    _weights("unexpected.pt", extra="head.w")
    _weights("shape.pt", num_classes=9)
    r = _run("pipeline", *PIPE, *args, *mode, "--out", "out/run")
    assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert r.output.startswith("error: ")
    assert not (work / "out").exists()


def test_imagenet_preset_takes_a_torchvision_model_and_weights(work):
    pytest.importorskip("torchvision")
    from dataclasses import fields

    from na_deploy.pipeline.presets import resolve_config
    from na_deploy.pipeline.run import PipelineConfig

    defaults = {f.name: f.default for f in fields(PipelineConfig)}
    c = resolve_config(defaults, "imagenet-resnet50", {"model": "torchvision:resnet50", "weights": "w.pth"})
    assert (c["model"], c["weights"], c["p"], c["preset"]) == ("torchvision:resnet50", "w.pth", 3,
                                                              "imagenet-resnet50")
    PipelineConfig(**c).validate()
    torch.save({"fc.weight": torch.zeros(1000, 2048), "foo": torch.zeros(1)}, "w.pth")
    r = _run("pipeline", "--preset", "imagenet-resnet50", "--model", "torchvision:resnet50", "--weights", "w.pth",
             "--augment", "none", "--data", "rgb.npz", "--out", "out/run")
    assert r.exit_code == 2 and "--weights w.pth: does not match model 'torchvision:resnet50' (missing" in r.output
    assert "unexpected 1: foo" in r.output and not (work / "out").exists()


def test_pipeline_refuses_t_above_24_bits():
    from na_deploy.errors import NaDeployError
    from na_deploy.pipeline.run import PipelineConfig

    PipelineConfig(timesteps=(1, 2 ** 23 - 1)).validate()
    with pytest.raises(NaDeployError, match=r"^--timesteps: T = 8388608 exceeds 2\*\*23-1"):
        PipelineConfig(timesteps=(1, 2 ** 23)).validate()
    with pytest.raises(NaDeployError, match=r"^--verify-timesteps: T = 8388608"):
        PipelineConfig(verify_timesteps=2 ** 23).validate()
    with pytest.raises(NaDeployError, match="--epochs-fp 0 only with --weights"):
        PipelineConfig(epochs_fp=0).validate()


class _Clamped(nn.Module):
    def __init__(self, form):
        super().__init__()
        self.conv, self.form = nn.Conv2d(1, 2, 3), form

    def forward(self, x):
        v = self.conv(x)
        return {"torch.clamp": lambda: torch.clamp(v, 0, 3.0), "torch.clip": lambda: torch.clip(v, min=0, max=4),
                "Tensor.clamp": lambda: v.clamp(0, 5), "Tensor.clip_": lambda: v.clip_(0, 2.5),
                "clamp(min=0)": lambda: v.clamp(min=0), "bad": lambda: v.clamp(-1, 1)}[self.form]()


@pytest.mark.parametrize("form,upper", [("torch.clamp", 3.0), ("torch.clip", 4.0), ("Tensor.clamp", 5.0),
                                        ("Tensor.clip_", 2.5), ("clamp(min=0)", None)])
def test_clamp_forms_become_the_quantized_relu(form, upper):
    from na_deploy.training.quantizer import QuantReLU
    from na_deploy.training.surgery import calibrate_step_sizes, quant_layers, quantize_model

    q = quantize_model(_Clamped(form), 2)
    (name, layer), = quant_layers(q)
    assert isinstance(layer, QuantReLU) and layer.upper == upper
    torch.manual_seed(0)
    calibrate_step_sizes(q, torch.randn(8, 1, 6, 6) * 4)
    if upper is not None:  # p*s <= a: the clip at a never binds below the QuantReLU's own clip at p*s
        assert layer.threshold <= upper + 1e-6
    graph_ops = {n.target for n in q.graph.nodes if n.op in ("call_function", "call_method")}
    assert not graph_ops & {torch.clamp, torch.clip, "clamp", "clip", "clip_"}


@pytest.mark.parametrize("module,upper", [(nn.Hardtanh(0, 2.5), 2.5), (nn.ReLU6(), 6.0)])
def test_clipped_relu_modules_become_the_quantized_relu(module, upper):
    from na_deploy.training.quantizer import QuantReLU
    from na_deploy.training.surgery import quant_layers, quantize_model

    (_, layer), = quant_layers(quantize_model(nn.Sequential(nn.Conv2d(1, 2, 3), module), 2))
    assert isinstance(layer, QuantReLU) and layer.upper == upper


def test_clamp_with_other_bounds_is_refused():
    from na_deploy.training.surgery import quantize_model

    with pytest.raises(ModelError, match=r"clamp\(min=-1, max=1\) is not supported; allowed: clamp\(0, a\)"):
        quantize_model(_Clamped("bad"), 2)


def test_quantize_refuses_an_unsupported_op_before_the_fp_checkpoint(work):
    (work / "gelu.py").write_text(GELU_BUILDER)
    r = _run("quantize", "--model", "gelu.py:build", "--data", "rgb.npz", "--epochs", "1", "--fp-epochs", "1",
             "--out", "q.pt", "--quiet")
    assert r.exit_code == 2 and "--model gelu.py:build: 1: activation GELU is not supported" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and not (work / "q-fp.pt").exists()


MUL_BUILDER = '''
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes, in_channels=3):
        super().__init__()
        self.conv, self.relu = nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU()
        self.pool, self.fc = nn.AvgPool2d(2), nn.Linear(4 * 4 * 4, num_classes)

    def forward(self, x):
        a = self.relu(self.conv(x))
        return self.fc(self.pool(a * a).flatten(1))  # a product of two activations: no synapse computes it


def build(num_classes, in_channels=3):
    return Net(num_classes, in_channels)
'''


def test_pipeline_refuses_a_net_that_does_not_convert_before_training(work):
    (work / "mul.py").write_text(MUL_BUILDER)
    r = _run("pipeline", *PIPE, "--model", "mul.py:build", "--out", "out/run")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert r.output.startswith("error: --model mul.py:build: does not convert to an SNN (fx node 'mul': mul is not")
    assert not (work / "out").exists()


def test_compat_table_page_names_the_command_that_regenerates_it(tmp_path):
    pytest.importorskip("torchvision")
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "experiments" / "torchvision_compat.py"
    spec = importlib.util.spec_from_file_location("torchvision_compat", script)
    compat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compat)
    out = tmp_path / "compat.md"
    compat.main([str(script), "--size", "32", "--only", "squeezenet1_1", "--lava", "--lava-max-synapses", "10",
                 "--out", str(out)])
    page = out.read_text()
    command = ("nice -n 10 .venv/bin/python benchmarks/experiments/torchvision_compat.py --size 32 --only "
               f"squeezenet1_1 --lava --lava-max-synapses 10 --out {out}")
    assert f"```\n{command}\n```" in page
    row = next(line for line in page.splitlines() if line.startswith("| squeezenet1_1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # the one-line reason, or no fit, or Lava skipped (above 10 synapses), said in its cell
    assert cells[-1] or cells[3].startswith("no (") or cells[6].startswith("skipped: "), row


def test_seeds_reuse_a_finished_seed_only_with_the_same_weights(work):
    torch.manual_seed(4)
    _weights("w.pt")
    args = ("pipeline", "--model", "mynet.py:build", "--weights", "w.pt", "--epochs-fp", "0", "--seeds", "0", *PIPE,
            "--out", "sd")
    assert _run(*args).exit_code == 0
    r = _run(*args)
    assert r.exit_code == 0 and "seed 0: reusing the finished run" in r.output, r.output
    torch.manual_seed(5)
    _weights("w.pt")  # other weights, same file name
    r = _run(*args)
    assert r.exit_code == 2 and "a finished seed run with another config (weights_sha256:" in r.output, r.output
