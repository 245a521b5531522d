"""Multi-process (DDP) training on torch.distributed, launched by torchrun (issue 13 item 3).

`torchrun --nproc_per_node N .venv/bin/na-deploy train|quantize ...` needs no new option: torchrun sets
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, `process_group` reads them, opens the group
(gloo on CPU, nccl when the rank's device is CUDA) and closes it on exit. Without them (or WORLD_SIZE 1)
everything here is a no-op and training is byte-identical to the single-process code.

What a run of W ranks computes (the training loop in `na_deploy.training.loop` asks `current()`):
- data: every rank draws the same seeded permutation per epoch and takes elements r::W of each GLOBAL
  batch (`--batch-size` is the global batch; `na_deploy.data.arrays.make_loaders(..., rank, world_size)`), so the
  union of the ranks' step-i shards is the single-process step-i batch. Unlike torch's DistributedSampler
  nothing is padded or dropped (padding repeats samples and would change the global batch).
- loss: DDP averages gradients over ranks; the mean of per-rank means is the global mean only for equal
  shards, so rank r's loss is weighted by W * b_r / B_i (b_r its shard, B_i the step's global batch, one
  all-reduce of the counts): the averaged gradient is then exactly the gradient of the global mean loss,
  also for the last partial batch.
- BatchNorm: torch's SyncBatchNorm runs only on GPUs, so `global_batchnorm` makes every BatchNorm layer
  compute its batch mean and variance over the whole global batch with a differentiable all-reduce (two
  passes: sum, then the centred sum of squares) on any device: forward, backward and running statistics
  are those of the single-process step on the same global batch (to float rounding).
- noise adaptor: eps comes from the torch RNG, re-seeded at the start of every epoch on every rank from
  `eps_seed(seed, rank, epoch)` (different per rank, independent of how the run was interrupted); W = 1
  keeps the single-process stream (seeded once, saved in the checkpoint).
- the schedule steps once per global step on every rank (the same number of steps everywhere); the
  optimizer state is identical on every rank (identical averaged gradients), so a checkpoint holds no
  per-rank state and resumes under any world size; only eps differs between world sizes.
- rank 0 alone writes checkpoints (atomically) and shows progress; `barrier()` lets the others wait for it.
"""
from __future__ import annotations

import contextlib
import datetime
import inspect
import os
import warnings
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from na_deploy.device import resolve_device
from na_deploy.errors import NaDeployError

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
TIMEOUT = datetime.timedelta(minutes=30)


class DistributedError(NaDeployError):
    """A torchrun world that cannot train together (bad environment, ranks disagreeing on the data)."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def from_env(environ: Optional[Mapping[str, str]] = None) -> World:
    """The world torchrun describes in the environment; World() (one process) when WORLD_SIZE is unset."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return World()
    missing = [k for k in ENV_VARS if k not in env]
    try:
        w = World(int(env.get("RANK", -1)), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", -1)))
    except ValueError as e:
        raise DistributedError(f"torchrun environment: {', '.join(f'{k}={env.get(k)!r}' for k in ENV_VARS[:3])}; "
                               f"allowed: integers 0 <= RANK, LOCAL_RANK < WORLD_SIZE") from e
    if w.world_size < 1 or not (0 <= w.rank < w.world_size) or w.local_rank < 0:
        raise DistributedError(f"torchrun environment: RANK={w.rank}, WORLD_SIZE={w.world_size}, LOCAL_RANK="
                               f"{w.local_rank}; allowed: 0 <= RANK < WORLD_SIZE, LOCAL_RANK >= 0")
    if w.distributed and missing:
        raise DistributedError(f"torchrun environment: WORLD_SIZE={w.world_size} but {', '.join(missing)} unset; "
                               f"launch with torchrun (it sets {', '.join(ENV_VARS)})")
    return w


def current() -> World:
    """The world of the open process group (World() when none is open)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    rank = dist.get_rank()
    return World(rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)))


def rank_device(device: Optional[str | torch.device], world: Optional[World] = None) -> torch.device:
    """The device of this rank: one process -> `resolve_device(device)`; under torchrun "auto"/"cuda" ->
    cuda:LOCAL_RANK when CUDA is present (auto: else CPU), "cpu" -> CPU; another cuda:N is refused."""
    w = current() if world is None else world
    if not w.distributed:
        return resolve_device(device)
    if device is None or device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        device = "cuda"
    dev = resolve_device(device)
    if dev.type != "cuda":
        return dev
    if dev.index not in (None, w.local_rank):
        raise DistributedError(f"device: {str(device)!r} under torchrun; each rank uses cuda:LOCAL_RANK "
                               f"(here cuda:{w.local_rank}); allowed: auto, cuda, cpu")
    if w.local_rank >= torch.cuda.device_count():
        raise DistributedError(f"device: LOCAL_RANK {w.local_rank} but {torch.cuda.device_count()} CUDA device(s) "
                               f"here; allowed: --nproc_per_node <= the GPUs per node, or --device cpu")
    return torch.device("cuda", w.local_rank)


@contextlib.contextmanager
def process_group(device: Optional[str] = "auto", environ: Optional[Mapping[str, str]] = None) -> Iterator[World]:
    """Open the torchrun world's process group for the block and destroy it after (also on error). One
    process, or a group already open (the caller's): nothing is opened or closed."""
    w = from_env(environ)
    if not w.distributed or (dist.is_available() and dist.is_initialized()):
        yield current() if dist.is_initialized() else World()
        return
    dev = rank_device(device, w)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=w.rank, world_size=w.world_size,
                            timeout=TIMEOUT)
    try:
        yield w
    finally:
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Where collective tensors live: the current CUDA device for nccl, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def barrier() -> None:
    if current().distributed:
        dist.barrier()


# ------------------------------------------------------------------------------------ checks
def check_same_data(dataset, **config) -> None:
    """DistributedError (the same one line on every rank) unless all ranks hold the same data (name,
    fingerprint, classes, image shape) and `config` (seed, batch size, ...)."""
    w = current()
    if not w.distributed:
        return
    mine = {"data": dataset.name, "data fingerprint": dataset.fingerprint, "classes": int(dataset.num_classes),
            "image shape": tuple(dataset.input_shape), **config}
    every: list = [None] * w.world_size
    dist.all_gather_object(every, mine)
    for rank, theirs in enumerate(every):
        if theirs != every[0]:
            key = next(k for k in every[0] if theirs.get(k) != every[0][k])
            a, b = every[0][key], theirs.get(key)
            if key == "data fingerprint":
                a, b = str(a)[:12], str(b)[:12]
            raise DistributedError(f"torchrun world: rank {rank} disagrees with rank 0 on the {key} ({b!r} vs "
                                   f"{a!r}); allowed: every rank loads the same data with the same options")


def check_batches(n_train: int, batch_size: int, world_size: int) -> None:
    """Every global batch must give every rank at least one sample."""
    if world_size <= 1:
        return
    last = n_train % batch_size or batch_size
    smallest = min(batch_size, n_train, last)
    if smallest < world_size:
        raise DistributedError(f"--batch-size {batch_size}: with {n_train} training samples a global batch of "
                               f"{smallest} leaves a rank of the {world_size} empty; allowed: a batch size whose "
                               f"batches (the last one included) hold >= WORLD_SIZE samples")


# ------------------------------------------------------------------------------------ data, seeds
def rank_loaders(make_loaders, dataset, batch_size: int, seed: int, device):
    """`make_loaders` for this rank: the global batch sharded r::W (one process: the unchanged call)."""
    w = current()
    if not w.distributed:
        return make_loaders(dataset, batch_size, seed, device)
    if "world_size" not in inspect.signature(make_loaders).parameters:
        raise DistributedError("torchrun world: this na_deploy.data.arrays.make_loaders cannot shard batches by rank")
    check_batches(len(dataset.y_train), batch_size, w.world_size)
    return make_loaders(dataset, batch_size, seed, device, rank=w.rank, world_size=w.world_size)


def eps_seed(seed: int, rank: int, epoch: int) -> int:
    """The noise adaptor's RNG seed of `rank` in `epoch` (numpy SeedSequence: distinct, well mixed)."""
    return int(np.random.SeedSequence([int(seed), int(rank), int(epoch)]).generate_state(1)[0])


def seed_noise(seed: int, epoch: int) -> None:
    """Under torchrun: re-seed the torch RNG (eps) for this rank and epoch. One process: nothing."""
    w = current()
    if w.distributed:
        torch.manual_seed(eps_seed(seed, w.rank, epoch))


def step_weight(n_local: int) -> Optional[float]:
    """W * b_r / B_i for this step (see the module doc); None in one process (the loss is left untouched)."""
    w = current()
    if not w.distributed:
        return None
    n = torch.tensor([n_local], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(n)
    return w.world_size * n_local / int(n.item())


def reduce_sums(*values: float) -> tuple[float, ...]:
    """Sum each value over the ranks (float64); unchanged in one process."""
    if not current().distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return tuple(float(v) for v in t.tolist())


# ------------------------------------------------------------------------------------ model
class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over the ranks: the backward pass sums the incoming gradients the same way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class _GlobalBatchNorm:
    """Mixin: training-mode batch statistics over the whole global batch (every rank), differentiable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype, device=x.device)
        sums = all_reduce(torch.cat([x.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        xc = x - mean.view(shape)
        var = all_reduce((xc * xc).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                nn_ = float(n.detach())
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (nn_ / max(nn_ - 1, 1.0)), alpha=m)
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


class GlobalBatchNorm1d(_GlobalBatchNorm, nn.BatchNorm1d):
    pass


class GlobalBatchNorm2d(_GlobalBatchNorm, nn.BatchNorm2d):
    pass


class GlobalBatchNorm3d(_GlobalBatchNorm, nn.BatchNorm3d):
    pass


_GLOBAL = {nn.BatchNorm1d: GlobalBatchNorm1d, nn.BatchNorm2d: GlobalBatchNorm2d, nn.BatchNorm3d: GlobalBatchNorm3d}


@contextlib.contextmanager
def global_batchnorm(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block every BatchNorm{1,2,3}d of `model` uses global-batch statistics under torchrun
    (its class is swapped in place: same parameters, buffers, state_dict keys); restored afterwards."""
    swapped = [(m, type(m)) for m in model.modules() if type(m) in _GLOBAL] if current().distributed else []
    for m, cls in swapped:
        m.__class__ = _GLOBAL[cls]
    try:
        yield model
    finally:
        for m, cls in swapped:
            m.__class__ = cls


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel(model) under torchrun (parameters broadcast from rank 0); else `model`."""
    if not current().distributed:
        return model
    # conv weights with one input channel: a harmless layout note of DDP's reducer, once per rank
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides", category=UserWarning)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" \
        else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
