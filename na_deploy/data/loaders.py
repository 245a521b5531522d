"""Seeded batch iterators for training and evaluation, for npz arrays and image folders (issue 13 item 2).

`make_loaders(dataset, batch_size, seed, device, rank, world_size, num_workers)` -> `Loaders`:
  train()              one epoch: (uint8 N x C x H x W, int64 labels) tensors on `device`
  test(batch_size)     the test split in order (evaluation views), tensors on `device`
  num_train_batches()  ceil(N_train / batch_size): the number of steps of every rank
  generator            the seeded shuffle generator; its state is all a resumed run needs (saved in checkpoints)

`batch_size` is the GLOBAL batch. Every epoch draws one permutation from `generator` (the same on every rank);
rank r takes elements r::world_size of each global batch, so the union over ranks of step i is the
single-process step i. A rank whose share of the last global batch is empty gets an empty batch (0 images), so
every rank runs num_train_batches() steps. world_size 1 on npz data without augmentation gives the batches the
project has always given (one `torch.randperm` per epoch, in order).

Augmented or folder data is streamed through a torch DataLoader with `num_workers` worker processes. After the
permutation each epoch draws one augmentation seed from `generator`; the sample at global position j of the epoch
is augmented with `transforms.sample_rng(epoch_seed, j)`, so the same seed gives the same pixels with any number
of workers and any world size. `test_batches(dataset, batch_size)` streams the test split as numpy arrays.
"""
from __future__ import annotations

import multiprocessing
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from na_deploy.errors import DataError
from na_deploy.data.transforms import eval_view, sample_rng, train_view

Batch = tuple[torch.Tensor, torch.Tensor]


class ArraySource:
    """index -> the uint8 C x H x W image of an in-memory array (npz data)."""

    def __init__(self, x: np.ndarray):
        self.x = x

    def __call__(self, i: int) -> np.ndarray:
        return self.x[i]


class Views(torch.utils.data.Dataset):
    """Key (index, epoch_seed, position) -> (uint8 C x H x W tensor, label); epoch_seed None: evaluation view."""

    def __init__(self, source, labels: np.ndarray, augment: str):
        self.source, self.labels, self.augment = source, labels, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        i, epoch_seed, position = key
        img = self.source(i)
        if epoch_seed is None:
            view = eval_view(self.augment, img)
        else:
            view = train_view(self.augment, img, sample_rng(epoch_seed, position))
        return torch.from_numpy(np.ascontiguousarray(view)), int(self.labels[i])


class Collate:
    """Stack (image, label) pairs; an empty list gives an empty batch of the view shape."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)

    def __call__(self, items) -> Batch:
        if not items:
            return torch.empty((0, *self.shape), dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.int64)


def _context(num_workers: int):
    """fork where the platform has it, taken as an explicit context: the global start method stays unset, which
    Lava needs (it sets fork itself at import, docs/contract.md "Lava facts")."""
    if num_workers < 1:
        return None
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else methods[0])


def _one_line(e: DataError) -> DataError:
    """A DataError re-raised by a DataLoader worker carries a traceback; keep its own one-line message."""
    lines = [ln for ln in str(e).splitlines() if "DataError: " in ln]
    return DataError(lines[-1].split("DataError: ", 1)[1]) if lines else e


def stream(views: Views, keys: list[list], shape: tuple[int, ...], num_workers: int,
           pin: bool = False) -> Iterator[Batch]:
    """(uint8 images, int64 labels) CPU tensors, one per list of keys, from `num_workers` workers (0: here)."""
    loader = DataLoader(views, batch_sampler=keys, num_workers=num_workers, collate_fn=Collate(shape),
                        pin_memory=pin, multiprocessing_context=_context(num_workers))
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except DataError as e:
            raise _one_line(e) from None
        yield batch


def _workers(dataset: Any, num_workers: Optional[int]) -> int:
    n = getattr(dataset, "workers", 0) if num_workers is None else num_workers
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise DataError(f"--workers {n!r}: allowed: an integer >= 0 (0 loads data in the main process)")
    return int(n)


def _streamed(dataset: Any) -> bool:
    """Folder data, or any augmentation: images go through Views; plain npz arrays are indexed directly."""
    return bool(getattr(dataset, "streamed", False)) or getattr(dataset, "augment", "none") != "none"


def test_batches(dataset: Any, batch_size: int, num_workers: Optional[int] = None
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The test split in order as (uint8 N x C x H x W, int64 labels) numpy arrays of at most `batch_size`
    (evaluation views: folders are decoded and, with augment imagenet, resized + centre-cropped)."""
    if batch_size < 1:
        raise DataError(f"batch_size: must be >= 1, got {batch_size}")
    if not getattr(dataset, "streamed", False):  # npz: evaluation view = the array itself
        for i in range(0, dataset.num_test, batch_size):
            yield dataset.x_test[i:i + batch_size], dataset.y_test[i:i + batch_size]
        return
    n = dataset.num_test
    keys = [[(j, None, 0) for j in range(i, min(i + batch_size, n))] for i in range(0, n, batch_size)]
    views = Views(dataset.test_source(), dataset.y_test, dataset.augment)
    for xb, yb in stream(views, keys, dataset.input_shape, _workers(dataset, num_workers)):
        yield xb.numpy(), yb.numpy()


test_batches.__test__ = False  # a library function, not a pytest test (where a test module imports it)


class Loaders:
    """Seeded batch iterators over a data set (see the module docstring)."""

    def __init__(self, dataset: Any, batch_size: int, seed: int = 0, device: torch.device | str = "cpu",
                 rank: int = 0, world_size: int = 1, num_workers: Optional[int] = None):
        if batch_size < 1:
            raise DataError(f"batch_size: must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"rank {rank} of world_size {world_size}: allowed: 0 <= rank < world_size")
        self.dataset, self.batch_size, self.seed, self.device = dataset, int(batch_size), int(seed), device
        self.rank, self.world_size = int(rank), int(world_size)
        self.num_workers = _workers(dataset, num_workers)
        self.generator = torch.Generator().manual_seed(int(seed))

    def train(self) -> Iterator[Batch]:
        return self._train_epoch()

    def _train_epoch(self) -> Iterator[Batch]:
        d, b, r, w = self.dataset, self.batch_size, self.rank, self.world_size
        n = d.num_train
        order = torch.randperm(n, generator=self.generator)
        if not _streamed(d):
            xt = torch.from_numpy(np.ascontiguousarray(d.x_train))
            yt = torch.from_numpy(np.ascontiguousarray(d.y_train))
            for i in range(0, n, b):
                idx = order[i:i + b][r::w]
                yield xt[idx].to(self.device), yt[idx].to(self.device)
            return
        epoch_seed = int(torch.randint(0, 2 ** 62, (1,), generator=self.generator))
        perm = order.tolist()
        keys = [[(perm[j], epoch_seed, j) for j in range(i, min(i + b, n))][r::w] for i in range(0, n, b)]
        views = Views(d.train_source(), d.y_train, d.augment)
        pin = torch.device(self.device).type == "cuda"
        for xb, yb in stream(views, keys, d.input_shape, self.num_workers, pin):
            yield xb.to(self.device, non_blocking=pin), yb.to(self.device, non_blocking=pin)

    def test(self, batch_size: Optional[int] = None) -> Iterator[Batch]:
        for xb, yb in test_batches(self.dataset, batch_size or max(self.batch_size, 256), self.num_workers):
            yield torch.as_tensor(xb).to(self.device), torch.as_tensor(yb).to(self.device)

    def num_train_batches(self) -> int:
        return -(-self.dataset.num_train // self.batch_size)


def make_loaders(dataset: Any, batch_size: int, seed: int = 0, device: torch.device | str = "cpu", rank: int = 0,
                 world_size: int = 1, num_workers: Optional[int] = None) -> Loaders:
    """`Loaders` over `dataset` (npz `Dataset` or `FolderDataset`); num_workers None: the data set's own
    (`load_dataset(..., workers=N)`, i.e. --workers), 0 when unset."""
    return Loaders(dataset, batch_size, seed, device, rank, world_size, num_workers)


def first_test_images(dataset: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n test images and labels as arrays (evaluation views), decoding no more than n of them."""
    if not getattr(dataset, "streamed", False):
        return dataset.x_test[:n], dataset.y_test[:n]
    xs, ys = [], []
    for xb, yb in test_batches(dataset, max(1, min(int(n), 256))):
        xs.append(xb), ys.append(yb)
        if sum(len(y) for y in ys) >= n:
            break
    return np.concatenate(xs)[:n], np.concatenate(ys)[:n]


def eval_inputs(dataset: Any, limit: Optional[int] = None, batch_size: int = 256):
    """(x, y, n) for `accuracy.accuracy_vs_timesteps` over the first `limit` test samples (None: all): the arrays
    of an in-memory data set, or for a streamed folder a factory of fresh (x, y) batch iterators, y None, and
    n its sample count, so that no stage holds the whole test split in memory."""
    n = dataset.num_test if not limit else min(int(limit), dataset.num_test)
    if not getattr(dataset, "streamed", False):
        return dataset.x_test[:n], dataset.y_test[:n], n

    def factory():
        left = n
        for xb, yb in test_batches(dataset, batch_size):
            if left <= 0:
                return
            yield xb[:left], yb[:left]
            left -= len(yb)
    return factory, None, n


__all__ = ["ArraySource", "Loaders", "Views", "eval_inputs", "first_test_images", "make_loaders", "stream",
           "test_batches"]
