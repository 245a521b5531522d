"""End to end: `na-deploy train` + `quantize` on digits, checkpoints, determinism, bad input (exit 2, nothing
written)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from na_deploy.training.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from na_deploy.cli.main import cli
from na_deploy.data.arrays import load_dataset
from na_deploy.errors import CheckpointError
from na_deploy.models import build_model
from na_deploy.training.quantizer import QuantReLU
from na_deploy.training.surgery import quant_layers
from na_deploy.training.loop import model_accuracy, train_full_precision, train_qat

FAST = ["--quiet", "--device", "cpu", "--batch-size", "128"]


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(seed=0)


@pytest.fixture(scope="module")
def fp_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("fp") / "fp.pt"
    r = run("train", "--epochs", "2", "--out", str(path), *FAST)
    assert r.exit_code == 0, r.output
    assert "fp digits_cnn: test accuracy" in r.output
    return str(path)


def test_train_then_quantize_end_to_end_and_round_trip(tmp_path, fp_ckpt, digits):
    out = tmp_path / "q.pt"
    r = run("quantize", "--from", fp_ckpt, "--p", "2", "--epochs", "1", "--out", str(out), *FAST)
    assert r.exit_code == 0, r.output
    assert "qat p=2 (noise adaptor on) digits_cnn: test accuracy" in r.output
    ck = load_checkpoint(out)
    assert (ck.kind, ck.model_name, ck.p, ck.noise_adaptor) == ("qat", "digits_cnn", 2, True)
    assert ck.input_shape == (1, 8, 8) and ck.num_classes == 10 and ck.seed == 0
    assert ck.data_fingerprint == digits.fingerprint
    assert np.allclose(ck.channel_scale, digits.normalization.channel_scale)
    assert ck.optimizer_state is not None and ck.scheduler_state is not None and ck.epoch == 1
    assert [h["epoch"] for h in ck.history] == [0, 1] and ck.parent["path"] == fp_ckpt
    model = ck.build_model()
    layers = quant_layers(model)
    assert len(layers) == 3 and all(isinstance(l, QuantReLU) and l.p == 2 for _, l in layers)
    for name, layer in layers:  # learned step sizes travel with the checkpoint
        assert float(layer.step_size.detach()) == float(ck.state_dict[f"{name}.step_size"])
    acc = model_accuracy(model, digits.x_test, digits.y_test, ck.normalization)
    assert acc == ck.history[-1]["test_acc"] and acc > 0.5
    fp = load_checkpoint(fp_ckpt)
    assert fp.kind == "fp" and fp.p is None and not quant_layers(fp.build_model())


def test_quantize_without_from_trains_fp_first(tmp_path):
    out = tmp_path / "run" / "q.pt"
    r = run("quantize", "--no-noise-adaptor", "--fp-epochs", "1", "--epochs", "1", "--out", str(out), *FAST)
    assert r.exit_code == 0, r.output
    assert "no --from given: training digits_cnn in full precision first" in r.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["q-fp.pt", "q.pt"]
    ck = load_checkpoint(out)
    assert ck.noise_adaptor is False and load_checkpoint(out.parent / "q-fp.pt").kind == "fp"


def test_same_seed_same_weights_on_cpu(digits, tmp_path):
    kw = dict(epochs=1, lr=0.1, device="cpu", batch_size=128, progress=False)
    a = train_full_precision(digits, "digits_cnn", seed=3, **kw)
    b = train_full_precision(digits, "digits_cnn", seed=3, **kw)
    c = train_full_precision(digits, "digits_cnn", seed=4, **kw)
    sa, sb, sc = a.checkpoint.state_dict, b.checkpoint.state_dict, c.checkpoint.state_dict
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    qa = train_qat(digits, a.checkpoint, p=2, epochs=1, seed=3, device="cpu", batch_size=128, progress=False)
    qb = train_qat(digits, b.checkpoint, p=2, epochs=1, seed=3, device="cpu", batch_size=128, progress=False)
    assert all(torch.equal(qa.checkpoint.state_dict[k], qb.checkpoint.state_dict[k]) for k in qa.checkpoint.state_dict)
    path = tmp_path / "a.pt"
    save_checkpoint(qa.checkpoint, path)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic write leaves no temp file
    assert load_checkpoint(path).history == qa.history


def test_same_command_gives_the_same_checkpoint_and_net_bytes(tmp_path):
    """Determinism (seeds are parameters): train -> quantize -> convert twice into the same paths gives the same file
    bytes, so nothing run-dependent (wall times) is stored in a checkpoint or carried into the net's made_from."""
    def once():
        assert run("train", "--model", "digits_cnn", "--epochs", "1", "--seed", "5", *FAST,
                   "--out", str(tmp_path / "fp.pt")).exit_code == 0
        assert run("quantize", "--from", str(tmp_path / "fp.pt"), "--p", "2", "--epochs", "1", "--seed", "5", *FAST,
                   "--out", str(tmp_path / "qat.pt")).exit_code == 0
        assert run("convert", str(tmp_path / "qat.pt"), "--out", str(tmp_path / "net.nad.h5"),
                   "--quiet").exit_code == 0
        return {n: (tmp_path / n).read_bytes() for n in ("fp.pt", "qat.pt", "net.nad.h5", "net.float.nad.h5")}

    first = once()
    for n in first:
        (tmp_path / n).unlink()
    assert once() == first


GAPPY = np.array([0, 1, 2, 99] * 8)[:30]  # a new user's labels: 96 of 100 classes would be empty


def write_npz(path, **changes):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(30, 8, 8)).astype(np.uint8)
    y = np.arange(30) % 3
    arrays = dict(x_train=x, y_train=y, x_test=x[:6], y_test=y[:6])
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return str(path)


def forge(src, dst, **changes):
    raw = torch.load(src, weights_only=True)
    raw.update(changes)
    torch.save(raw, dst)
    return str(dst)


@pytest.mark.parametrize("case", ["unknown_model", "npz_missing", "npz_shape", "npz_labels", "p_zero",
                                  "other_model", "other_weights", "not_ckpt", "version", "qat_as_fp",
                                  "other_data", "bad_device", "empty_classes", "label_over_k", "k_one",
                                  "test_label_unseen", "quantize_empty_classes", "from_other_k", "from_npz_no_data"])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, fp_ckpt, case):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    out_dir = tmp_path / "out"
    out = str(out_dir / "x.pt")
    if case == "unknown_model":
        args = ["train", "--model", "resnet99"]
    elif case == "npz_missing":
        args = ["train", "--data", write_npz(inputs / "a.npz", y_test=None)]
    elif case == "npz_shape":
        args = ["train", "--data", write_npz(inputs / "a.npz", x_train=np.zeros((30, 64), np.uint8))]
    elif case == "npz_labels":
        args = ["train", "--data", write_npz(inputs / "a.npz", y_test=np.array([0, 1, 2, 3, 9, -1]))]
    elif case == "p_zero":
        args = ["quantize", "--from", fp_ckpt, "--p", "0"]
    elif case == "other_model":
        args = ["quantize", "--from", fp_ckpt, "--model", "tiny_resnet"]
    elif case == "other_weights":
        sd = build_model("tiny_resnet", in_channels=1, num_classes=10, input_size=8).state_dict()
        args = ["quantize", "--from", forge(fp_ckpt, inputs / "f.pt", state_dict=sd)]
    elif case == "not_ckpt":
        (inputs / "t.pt").write_text("not a checkpoint")
        args = ["quantize", "--from", str(inputs / "t.pt")]
    elif case == "version":
        args = ["quantize", "--from", forge(fp_ckpt, inputs / "v.pt", version=FORMAT_VERSION + 1)]
    elif case == "qat_as_fp":
        args = ["quantize", "--from", forge(fp_ckpt, inputs / "q.pt", kind="qat", p=2, noise_adaptor=True)]
    elif case == "other_data":
        args = ["quantize", "--from", fp_ckpt, "--seed", "1"]
    elif case == "empty_classes":  # labels {0, 1, 2, 99}: 96 empty classes
        args = ["train", "--data", write_npz(inputs / "a.npz", y_train=GAPPY, y_test=GAPPY[:6])]
    elif case == "label_over_k":
        args = ["train", "--data", write_npz(inputs / "a.npz", y_train=GAPPY, y_test=GAPPY[:6]), "--num-classes", "50"]
    elif case == "k_one":
        args = ["train", "--num-classes", "1"]
    elif case == "test_label_unseen":  # class 3 is empty in y_train (allowed by K = 5) but used in y_test
        args = ["train", "--data", write_npz(inputs / "a.npz", y_test=np.arange(6) % 4), "--num-classes", "5"]
    elif case == "quantize_empty_classes":
        args = ["quantize", "--data", write_npz(inputs / "a.npz", y_train=GAPPY, y_test=GAPPY[:6])]
    elif case == "from_other_k":
        args = ["quantize", "--from", fp_ckpt, "--num-classes", "12"]
    elif case == "from_npz_no_data":
        args = ["quantize", "--from", forge(fp_ckpt, inputs / "n.pt", data_name="a.npz")]
    else:
        if torch.cuda.is_available():
            pytest.skip("CUDA present")
        args = ["train", "--device", "cuda"]
    r = CliRunner().invoke(cli, args + ["--out", out, "--epochs", "1", "--quiet"])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert not out_dir.exists()


def test_checkpoint_errors_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_help_speaks_the_papers_terms():
    r = run("quantize", "--help")
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    for term in ("th = p*s", "step size", "eq. 7-8", "U(-1/2, 1/2)", "--noise-adaptor / --no-noise-adaptor"):
        assert term in text
    assert run("train", "--help").exit_code == 0


@pytest.mark.parametrize("kind", ["fp", "qat"])
def test_interrupted_run_resumes_to_the_same_weights(digits, tmp_path, kind):
    from na_deploy.training.loop import resume_training

    kw = dict(seed=2, device="cpu", batch_size=128, progress=False)
    if kind == "fp":
        full = train_full_precision(digits, "digits_cnn", epochs=3, **kw)
        train_full_precision(digits, "digits_cnn", epochs=3, out=str(tmp_path / "c.pt"), stop_after=1, **kw)
    else:
        fp = train_full_precision(digits, "digits_cnn", epochs=1, **kw)
        full = train_qat(digits, fp.checkpoint, p=2, epochs=3, **kw)
        train_qat(digits, fp.checkpoint, p=2, epochs=3, out=str(tmp_path / "c.pt"), stop_after=1, **kw)
    saved = load_checkpoint(tmp_path / "c.pt")
    assert (saved.epoch, saved.epochs) == (1, 3)
    done = resume_training(str(tmp_path / "c.pt"), digits, device="cpu", progress=False)
    a, b = full.checkpoint.state_dict, done.checkpoint.state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["test_acc"] for h in done.history] == [h["test_acc"] for h in full.history]
    assert load_checkpoint(tmp_path / "c.pt").epoch == 3
    with pytest.raises(CheckpointError, match="already complete"):
        resume_training(str(tmp_path / "c.pt"), digits, device="cpu", progress=False)


# ------------------------------------------------------------------------------------- --num-classes K
def test_num_classes_trains_a_head_with_empty_classes_and_says_so(tmp_path):
    data = write_npz(tmp_path / "gap.npz", y_train=GAPPY, y_test=GAPPY[:6])
    fp, q = tmp_path / "fp.pt", tmp_path / "q.pt"
    r = run("train", "--data", data, "--num-classes", "100", "--epochs", "1", "--out", str(fp), *FAST)
    assert r.exit_code == 0, r.output
    warn = [line for line in r.output.splitlines() if line.startswith("warning: ")]
    assert len(warn) == 1 and "96 of the 100 classes (K = 100 from --num-classes)" in warn[0]
    ck = load_checkpoint(fp)
    assert ck.num_classes == 100 and ck.model_kwargs["num_classes"] == 100
    assert ck.state_dict[[k for k in ck.state_dict if k.endswith("weight")][-1]].shape[0] == 100
    r = run("quantize", "--from", str(fp), "--data", data, "--epochs", "1", "--out", str(q), *FAST)  # K inherited
    assert r.exit_code == 0, r.output
    assert f"(K = 100 from the checkpoint {fp})" in r.output and load_checkpoint(q).num_classes == 100


def test_pipeline_refuses_empty_classes_before_any_folder(tmp_path):
    data = write_npz(tmp_path / "gap.npz", y_train=GAPPY, y_test=GAPPY[:6])
    for extra in ([], ["--num-classes", "1"], ["--num-classes", "50"]):
        r = CliRunner().invoke(cli, ["pipeline", "--data", data, "--out", str(tmp_path / "run"), *extra])
        assert r.exit_code == 2 and r.output.count("\n") == 1 and r.output.startswith("error: "), r.output
        assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


# -------------------------------------------------------------------------------------------- --resume
def interrupt_after_epoch(monkeypatch, k):
    """Ctrl-C right after the checkpoint of epoch `k` is written: what an interrupted run leaves."""
    import na_deploy.training.loop as train_module

    real = train_module.save_checkpoint

    def save_then_stop(ckpt, path):
        real(ckpt, path)
        if ckpt.epoch == k:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_stop)


@pytest.mark.parametrize("kind", ["fp", "qat"])
def test_cli_resume_equals_the_uninterrupted_run(tmp_path, monkeypatch, fp_ckpt, kind):
    """N = 2 epochs in one go == 1 epoch, interrupted, then `--resume` to 2: equal weights, bit for bit (the
    library's guarantee on CPU: weights, step sizes, optimizer, schedule and both RNG states are restored)."""
    part = str(tmp_path / "part.pt")
    if kind == "fp":
        full = fp_ckpt  # `train --epochs 2` + FAST, seed 0
        command = ["train", "--epochs", "2", "--out", part, *FAST]
    else:
        full = str(tmp_path / "full.pt")
        command = ["quantize", "--from", fp_ckpt, "--epochs", "2", "--out", part, *FAST]
        assert run(*command[:-len(FAST) - 2], "--out", full, *FAST).exit_code == 0
    interrupt_after_epoch(monkeypatch, 1)
    assert run(*command).exit_code == 130  # interrupted (issue 22: 130, never 1, which means a failed check)
    monkeypatch.undo()
    assert (load_checkpoint(part).epoch, load_checkpoint(part).epochs) == (1, 2)
    r = run(*command, "--resume", part)  # the same command again, with --resume
    assert r.exit_code == 0, r.output
    assert f"from {part} after epoch 1 of 2 -> {part}" in r.output
    a, b = load_checkpoint(full), load_checkpoint(part)
    assert b.epoch == 2 and a.state_dict.keys() == b.state_dict.keys()
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert [h["test_acc"] for h in a.history] == [h["test_acc"] for h in b.history]
    assert [h["epoch"] for h in b.history] == ([1, 2] if kind == "fp" else [0, 1, 2])


@pytest.fixture(scope="module")
def part_fp(tmp_path_factory, digits):
    path = tmp_path_factory.mktemp("part") / "part.pt"
    train_full_precision(digits, "digits_cnn", epochs=2, seed=0, device="cpu", batch_size=128, out=str(path),
                         stop_after=1, progress=False)
    return str(path)


@pytest.mark.parametrize("case, fragment", [
    ("missing", "nope.pt: checkpoint file not found"),
    ("fp_to_quantize", "kind is 'fp' (written by `na-deploy train`); `na-deploy quantize --resume` continues"),
    ("qat_to_train", "kind is 'qat' (written by `na-deploy quantize`); `na-deploy train --resume` continues"),
    ("model", "--model tiny_resnet conflicts with --resume"),
    ("epochs", "--epochs 5 conflicts with --resume"),
    ("p", "--p 3 conflicts with --resume"),
    ("noise", "--no-noise-adaptor conflicts with --resume"),
    ("from", "a resumed run needs no --from"),
    ("weights", "the weights belong to another model"),
    ("shape", "holds a model for C x H x W = (1, 8, 8) inputs; the data 'a.npz' has (1, 6, 6) images"),
    ("data", "trained on data 'digits(seed=0)' (fingerprint"),
    ("no_data", "its run trained on 'a.npz', not the embedded digits; give that file with --data"),
    ("done", "run already complete (epoch 2 of 2); nothing to resume"),
    ("augment", "--augment cifar conflicts with --resume"),
])
def test_resume_bad_input_one_line_exit_2_nothing_written(tmp_path, fp_ckpt, part_fp, case, fragment):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    qat = forge(part_fp, inputs / "q.pt", kind="qat", p=2, noise_adaptor=True, parent={"path": fp_ckpt})
    ten = np.arange(30) % 10
    args = {
        "missing": ["train", "--resume", str(inputs / "nope.pt")],
        "fp_to_quantize": ["quantize", "--resume", part_fp],
        "qat_to_train": ["train", "--resume", qat],
        "model": ["train", "--resume", part_fp, "--model", "tiny_resnet"],
        "epochs": ["train", "--resume", part_fp, "--epochs", "5"],
        "p": ["quantize", "--resume", qat, "--p", "3"],
        "noise": ["quantize", "--resume", qat, "--no-noise-adaptor"],
        "from": ["quantize", "--resume", qat, "--from", part_fp],
        "weights": ["train", "--resume", forge(part_fp, inputs / "w.pt", state_dict=build_model(
            "tiny_resnet", in_channels=1, num_classes=10, input_size=8).state_dict())],
        "shape": ["train", "--resume", part_fp, "--data", write_npz(
            inputs / "a.npz", x_train=np.zeros((30, 6, 6), np.uint8), x_test=np.zeros((6, 6, 6), np.uint8),
            y_train=ten, y_test=ten[:6])],
        "data": ["train", "--resume", part_fp, "--data", write_npz(inputs / "b.npz", y_train=ten, y_test=ten[:6])],
        "no_data": ["train", "--resume", forge(part_fp, inputs / "n.pt", data_name="a.npz")],
        "done": ["train", "--resume", fp_ckpt],
        "augment": ["train", "--resume", part_fp, "--augment", "cifar"],
    }[case]
    before = {p: Path(p).read_bytes() for p in (fp_ckpt, part_fp, qat)}
    out_dir = tmp_path / "out"
    r = CliRunner().invoke(cli, args + ["--out", str(out_dir / "x.pt"), "--quiet", "--device", "cpu"])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], r.output
    assert not out_dir.exists() and all(Path(p).read_bytes() == b for p, b in before.items())


def test_augmentation_is_recorded_and_resume_continues_with_it(tmp_path):
    """A `--augment cifar` run records it in the checkpoint (none: nothing, the old bytes); `--resume` without
    --augment continues with cifar, so the resumed run equals the uninterrupted one."""
    aug = load_dataset(None, seed=0, augment="cifar")
    full, part = str(tmp_path / "full.pt"), str(tmp_path / "part.pt")
    kw = dict(epochs=2, seed=0, device="cpu", batch_size=256, progress=False)
    train_full_precision(aug, "digits_cnn", out=full, **kw)
    train_full_precision(aug, "digits_cnn", out=part, stop_after=1, **kw)
    assert load_checkpoint(full).hparams["augment"] == "cifar"
    r = run("train", "--resume", part, "--device", "cpu", "--quiet")
    assert r.exit_code == 0, r.output
    a, b = load_checkpoint(full), load_checkpoint(part)
    assert b.hparams["augment"] == "cifar" and b.epoch == 2
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
