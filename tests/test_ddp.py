"""DDP training on torch.distributed (issue 13 item 3): 2 CPU processes with the gloo backend.

One spawned 2-rank world (`_rank_main`, env vars as torchrun sets them) does, on a 151-sample slice of the
embedded digits with global batch 64 (steps of 64, 64 and a partial 23 -> shards 32/32, 32/32, 12/11):
  a. one epoch of full-precision training (of 2 planned) -> fp_w2.pt        (vs the same in one process)
  b. resume of the 1-process checkpoint fp_w1.pt to the end -> fp_w1_resumed_w2.pt
  c. QAT (noise adaptor off) from the 1-process fp model -> qat_w2.pt        (vs the same in one process)
  d. QAT with the noise adaptor on: each rank's eps and final weights      (eps differ, weights equal)
and the parent resumes the 2-rank checkpoint fp_w2.pt in one process. With the noise adaptor off every
BatchNorm uses global-batch statistics (na_deploy.training.distributed.global_batchnorm), so the 2-rank run computes
the single-process step on the same global batch: equal to float tolerance (gradient all-reduce order).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from na_deploy.training import distributed
from na_deploy.training.checkpoint import build_registry_model, load_checkpoint
from na_deploy.data.arrays import Dataset, load_digits_dataset
from na_deploy.training.quantizer import QuantReLU
from na_deploy.training.loop import resume_training, train_full_precision, train_qat

ROOT = Path(__file__).resolve().parents[1]
MODEL_KW = {"widths": (4, 8)}
TRAIN = dict(lr=0.1, seed=0, device="cpu", batch_size=64, model_kwargs=MODEL_KW, progress=False)
QAT = dict(p=2, epochs=1, lr=0.05, seed=0, device="cpu", batch_size=64, progress=False)


def small_dataset(path: Path | None = None) -> Dataset:
    """151 training and 40 test images of the digits; the ranks read them from `path` (no sklearn import)."""
    if path is not None and path.exists():
        with np.load(path) as z:
            return Dataset(*(z[k] for k in ("x_train", "y_train", "x_test", "y_test")), num_classes=10,
                           name="digits-slice")
    d = load_digits_dataset(0)
    ds = Dataset(d.x_train[:151], d.y_train[:151], d.x_test[:40], d.y_test[:40], num_classes=10, name="digits-slice")
    if path is not None:
        np.savez(path, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
    return ds


def one_step_grads(ds: Dataset) -> list[torch.Tensor]:
    """float64 gradients of one step on the global batch of the first 23 images (shards 12/11 in 2 ranks)
    through the training loop's pieces: global-batch BatchNorm, DDP, the per-rank loss weight."""
    torch.manual_seed(0)
    model = build_registry_model("digits_cnn", in_channels=1, num_classes=10, input_size=8, **MODEL_KW).double()
    world = distributed.current()
    x = ds.normalization.apply(torch.from_numpy(ds.x_train[:23])).double()[world.rank::world.world_size]
    y = torch.from_numpy(ds.y_train[:23])[world.rank::world.world_size]
    with distributed.global_batchnorm(model):
        net = distributed.wrap(model, torch.device("cpu"))
        loss = F.cross_entropy(net(x), y)
        weight = distributed.step_weight(len(y))
        (loss if weight is None else loss * weight).backward()
    return [p.grad for p in model.parameters()] + [b.clone() for b in model.buffers()]


def _rank_main(tmp: str) -> None:
    """One rank of the spawned world (run by `_spawn`)."""
    tmp_p = Path(tmp)
    with distributed.process_group("cpu") as world:
        ds = small_dataset(tmp_p / "slice.npz")
        torch.save(one_step_grads(ds), tmp_p / f"grads_rank{world.rank}.pt")
        train_full_precision(ds, "digits_cnn", epochs=2, stop_after=1, out=str(tmp_p / "fp_w2.pt"), **TRAIN)
        resume_training(str(tmp_p / "fp_w1.pt"), ds, device="cpu", out=str(tmp_p / "fp_w1_resumed_w2.pt"),
                        progress=False)
        fp = str(tmp_p / "fp_full_w1.pt")
        train_qat(ds, fp, noise_adaptor=False, out=str(tmp_p / "qat_w2.pt"), **QAT)
        eps: list = []
        forward = QuantReLU.forward

        def recording(self, v):  # the eps of every training forward
            out = forward(self, v)
            if self.last_eps is not None:
                eps.append(float(self.last_eps.double().sum()))
            return out
        QuantReLU.forward = recording
        res = train_qat(ds, fp, noise_adaptor=True, out=None, **QAT)
        QuantReLU.forward = forward
        torch.save(res.checkpoint.state_dict, tmp_p / f"qat_na_rank{world.rank}.pt")
        (tmp_p / f"eps_rank{world.rank}.json").write_text(json.dumps(eps))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(argv_for_rank, world_size: int = 2, timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """Start `world_size` processes with the torchrun environment; wait for all."""
    port = str(_free_port())
    procs = []
    for rank in range(world_size):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port, OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen(argv_for_rank(rank), env=env, cwd=ROOT, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    out = []
    for p in procs:
        try:
            o, e = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.append(subprocess.CompletedProcess(p.args, p.returncode, o, e))
    return out


def _close(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{what}: {k}")
        else:
            assert torch.equal(a[k], b[k]), f"{what}: {k}"


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    ds = small_dataset(tmp / "slice.npz")
    train_full_precision(ds, "digits_cnn", epochs=2, stop_after=1, out=str(tmp / "fp_w1.pt"), **TRAIN)
    train_full_precision(ds, "digits_cnn", epochs=2, out=str(tmp / "fp_full_w1.pt"), **TRAIN)
    code = (f"import sys, os; sys.path.insert(0, {str(ROOT / 'tests')!r}); "
            "os.environ.get('DDP_SHIM') and exec(open(os.environ['DDP_SHIM']).read()); "
            "import test_ddp; test_ddp._rank_main(sys.argv[1])")
    done = _spawn(lambda rank: [sys.executable, "-c", code, str(tmp)])
    for r, p in enumerate(done):
        assert p.returncode == 0, f"rank {r}: {p.stderr[-3000:]}"
    return tmp, ds


def test_ddp_step_equals_single_process_step_in_float64(ddp_run):
    tmp, ds = ddp_run
    one = one_step_grads(ds)
    for r in (0, 1):  # every rank ends the step with the single-process gradients and BN running statistics
        two = torch.load(tmp / f"grads_rank{r}.pt", weights_only=True)
        assert len(one) == len(two) == 11 + 9
        for a, b in zip(one, two):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_ddp_epoch_equals_single_process_on_the_same_global_batches(ddp_run):
    tmp, _ = ddp_run
    one, two = load_checkpoint(tmp / "fp_w1.pt"), load_checkpoint(tmp / "fp_w2.pt")
    assert one.epoch == two.epoch == 1 and two.history[-1]["world_size"] == 2
    _close(one.state_dict, two.state_dict, "weights + BN running stats after 3 steps (last one partial)")
    for a, b in zip(one.optimizer_state["state"].values(), two.optimizer_state["state"].values()):
        torch.testing.assert_close(a["momentum_buffer"], b["momentum_buffer"], rtol=1e-4, atol=1e-5)
    assert one.scheduler_state["last_epoch"] == two.scheduler_state["last_epoch"] == 3
    assert torch.equal(one.rng_state["shuffle"], two.rng_state["shuffle"])
    h1, h2 = one.history[-1], two.history[-1]
    assert h1["train_loss"] == pytest.approx(h2["train_loss"], rel=1e-5)  # global mean, not a mean of means
    assert h1["train_acc"] == h2["train_acc"] and h1["test_acc"] == h2["test_acc"]


def test_resume_across_world_sizes(ddp_run):
    tmp, ds = ddp_run
    full = load_checkpoint(tmp / "fp_full_w1.pt")
    resumed_in_1 = resume_training(str(tmp / "fp_w2.pt"), ds, device="cpu", out=str(tmp / "fp_w2_resumed_w1.pt"),
                                   progress=False).checkpoint
    resumed_in_2 = load_checkpoint(tmp / "fp_w1_resumed_w2.pt")
    for ck, what in ((resumed_in_1, "2-rank checkpoint resumed in 1 process"),
                     (resumed_in_2, "1-process checkpoint resumed in 2 ranks")):
        assert ck.epoch == 2 and ck.scheduler_state["last_epoch"] == full.scheduler_state["last_epoch"] == 6
        _close(full.state_dict, ck.state_dict, what)
        assert torch.equal(full.rng_state["shuffle"], ck.rng_state["shuffle"])


@pytest.mark.lava
def test_qat_in_two_ranks_equals_one_process_and_converts(ddp_run):
    from na_deploy.convert import convert_checkpoint
    from na_deploy.hw_targets import get_target
    from na_deploy.verify.bit_exact import verify

    tmp, ds = ddp_run
    two = load_checkpoint(tmp / "qat_w2.pt")
    one = train_qat(ds, str(tmp / "fp_full_w1.pt"), noise_adaptor=False, out=None, **QAT).checkpoint
    _close(one.state_dict, two.state_dict, "QAT weights and step sizes")
    target = get_target("loihi2")
    net = target.to_fixed_point(convert_checkpoint(two))
    assert target.check_fit(net, 4) == []
    rep = verify(net, ds.x_test[:2], 4, target, target.backend("lava"))  # reference vs Lava, bit-exact
    assert rep.equal and rep.samples == 2 and rep.mismatching_samples == 0


def test_noise_adaptor_eps_differs_per_rank_and_ranks_stay_in_sync(ddp_run):
    tmp, _ = ddp_run
    eps0, eps1 = (json.loads((tmp / f"eps_rank{r}.json").read_text()) for r in (0, 1))
    assert len(eps0) == len(eps1) == 9 and all(a != b for a, b in zip(eps0, eps1))  # 3 steps x 3 layers
    w0, w1 = (torch.load(tmp / f"qat_na_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # identical averaged gradients: bitwise equal ranks
    seeds = {distributed.eps_seed(0, r, e) for r in range(4) for e in range(1, 4)}
    assert len(seeds) == 12


def test_ranks_disagreeing_on_the_data_exit_2_with_one_line(tmp_path):
    d = load_digits_dataset(0)
    for r in (0, 1):
        x = d.x_train.copy()
        x[0, 0, 0, 0] ^= r  # rank 1's file differs in one pixel
        np.savez(tmp_path / f"d{r}.npz", x_train=x, y_train=d.y_train, x_test=d.x_test, y_test=d.y_test)
    na = str(ROOT / ".venv" / "bin" / "na-deploy")
    done = _spawn(lambda r: [na, "train", "--data", str(tmp_path / f"d{r}.npz"), "--epochs", "1", "--quiet",
                             "--device", "cpu", "--out", str(tmp_path / "fp.pt")])
    for p in done:
        assert p.returncode == 2, p.stderr[-2000:]
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: torchrun world: rank 1 disagrees with rank 0 on "
                                                       "the data"), p.stderr
    assert not (tmp_path / "fp.pt").exists()


def test_environment_and_batch_checks():
    assert distributed.from_env({}) == distributed.World()
    w = distributed.from_env(dict(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", MASTER_ADDR="h", MASTER_PORT="1"))
    assert (w.rank, w.world_size, w.local_rank, w.is_main) == (1, 2, 1, False)
    with pytest.raises(distributed.DistributedError, match="MASTER_ADDR, MASTER_PORT unset"):
        distributed.from_env(dict(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0"))
    with pytest.raises(distributed.DistributedError, match="RANK=2, WORLD_SIZE=2"):
        distributed.from_env(dict(RANK="2", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="h", MASTER_PORT="1"))
    with distributed.process_group("cpu", environ={}) as one:
        assert one == distributed.World() and not torch.distributed.is_initialized()
    assert distributed.rank_device("cpu", w) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert distributed.rank_device("auto", w) == torch.device("cpu")
    distributed.check_batches(150, 64, 2)
    with pytest.raises(distributed.DistributedError, match="--batch-size 64: .* a global batch of 1"):
        distributed.check_batches(129, 64, 2)


def test_torchrun_quantize_cli_rank0_writes_and_logs_once(ddp_run):
    tmp, _ = ddp_run
    out = tmp / "cli_qat.pt"
    cmd = [str(ROOT / ".venv" / "bin" / "torchrun"), "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(ROOT / ".venv" / "bin" / "na-deploy"), "quantize", "--from", str(tmp / "fp_full_w1.pt"), "--data",
           str(tmp / "slice.npz"), "--epochs", "1", "--device", "cpu", "--quiet", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [line for line in done.stdout.splitlines() if line.startswith("qat p=2")]
    assert len(summaries) == 1 and str(out) in summaries[0]  # rank 0 alone reports
    ck = load_checkpoint(out)
    assert ck.epoch == 1 and ck.history[-1]["world_size"] == 2 and ck.rng_state["world_size"] == 2
    assert not [p for p in tmp.iterdir() if p.name.startswith(".cli_qat.pt.")]  # no temp file left behind
