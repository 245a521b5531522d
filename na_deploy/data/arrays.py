"""Data sets, normalisation and batching (issue 2; contract C4).

A `Dataset` holds uint8 images N x C x H x W (raw pixels 0..255) and int64 labels. The default is
scikit-learn's embedded `load_digits` (1797 8x8 images, pixels 0..16), converted to uint8 by
`round_half_up(x * 255 / 16)` and split into 1437 train / 360 test, stratified, by `seed`.

User data: an .npz with arrays x_train, y_train, x_test, y_test. Images uint8 0..255, or float in [0, 1]
(converted by `floor(x * 255 + 1/2)`, round half up); N x H x W (one channel) or N x C x H x W.
Labels: integers in [0, K). K = 1 + the largest y_train label, and then every class 0..K-1 must occur in
y_train (labels {0, 1, 2, 99} are refused: 96 classes would be empty); or K stated by `num_classes`
(`--num-classes K`), which allows empty classes (with a one-line warning) but no label >= K. Every y_test
label must be a class that y_train uses. The same checks run on the embedded digits.

Normalisation (C4) is a per-channel SCALE only, no mean subtraction:
    x_norm[c] = x_uint8[c] * channel_scale[c],   channel_scale[c] = 1 / (255 * std_c)
with std_c the standard deviation of channel c of x/255 over the training split. With zero padding a mean
shift would not fold exactly into the first layer's bias; a scale folds exactly into the first conv's
weights, so raw integer pixels can enter the chip.

Image folders (`load_dataset(DIR)`, DIR/train/<class>/..., DIR/val/<class>/...): `na_deploy.data.image_folder`, a
streamed `FolderDataset` with the same attributes. Augmentation (`augment`: none | cifar | imagenet,
`na_deploy.data.transforms`) applies to folders and, without resizing (none, cifar), to npz arrays. Batching for both:
`na_deploy.data.loaders` (`make_loaders`, `test_batches`), re-exported here.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from na_deploy.checks import check_npz_members
from na_deploy.data.checks import Normalization, Warn, check_labels, check_num_classes  # noqa: F401 (re-exported)
from na_deploy.errors import DataError
from na_deploy.data.loaders import ArraySource, Loaders, make_loaders, test_batches  # noqa: F401 (re-exported)
from na_deploy.rounding import round_half_up
from na_deploy.data.transforms import RESIZING, check_augment

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
DIGITS_TEST_SIZE = 360


@dataclass
class Dataset:
    """uint8 images (N, C, H, W), int64 labels, and what training and checkpoints need to know about them."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    channel_std: np.ndarray = field(default=None)  # type: ignore[assignment]
    fingerprint: str = ""
    augment: str = "none"  # training augmentation (transforms.AUGMENTATIONS); none and cifar keep the size
    workers: int = 0  # DataLoader workers for augmented batches (0: the main process)
    streamed = False  # in memory (FolderDataset: True)

    def __post_init__(self) -> None:
        if self.channel_std is None:
            self.channel_std = channel_std(self.x_train)
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.x_train, self.y_train, self.x_test, self.y_test)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def normalization(self) -> Normalization:
        """channel_scale_c = 1 / (255 * std_c) (C4)."""
        return Normalization.from_scale(1.0 / (255.0 * self.channel_std))

    @property
    def num_train(self) -> int:
        return int(len(self.y_train))

    @property
    def num_test(self) -> int:
        return int(len(self.y_test))

    def train_source(self) -> ArraySource:
        return ArraySource(self.x_train)

    def test_source(self) -> ArraySource:
        return ArraySource(self.x_test)

    def train_images(self, indices) -> np.ndarray:
        """The training images at `indices` (uint8 N x C x H x W), as FolderDataset.train_images."""
        return self.x_train[np.asarray(indices)]


# ------------------------------------------------------------------------------------------ helpers
def round_half_up_to_uint8(x: np.ndarray) -> np.ndarray:
    """floor(x + 1/2) clipped to 0..255, as uint8 (the project's rounding rule, C1)."""
    return np.clip(round_half_up(x), 0, 255).astype(np.uint8)


def channel_std(x_uint8: np.ndarray) -> np.ndarray:
    """Per-channel population std of x/255 over N, H, W (float64). A constant channel gets std 1."""
    std = (x_uint8.astype(np.float64) / 255.0).std(axis=(0, 2, 3))
    return np.where(std > 0, std, 1.0)


def fingerprint(*arrays: np.ndarray) -> str:
    """sha256 over dtype, shape and bytes of each array in order."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def stratified_split(y: np.ndarray, test_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) index arrays, class proportions kept (sklearn StratifiedShuffleSplit)."""
    from sklearn.model_selection import StratifiedShuffleSplit

    split = StratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    tr, te = next(split.split(np.zeros(len(y)), y))
    return np.sort(tr), np.sort(te)


def load_digits_dataset(seed: int = 0, num_classes: Optional[int] = None, warn: Optional[Warn] = None,
                        num_classes_from: str = "--num-classes") -> Dataset:
    """scikit-learn digits: 8x8, pixels 0..16 -> uint8 round_half_up(x*255/16); 1437/360 stratified.
    10 classes, or `num_classes` (>= 10; the classes above 9 stay empty)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = round_half_up_to_uint8(d.images * 255.0 / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    tr, te = stratified_split(y, DIGITS_TEST_SIZE, seed)
    k = check_labels("digits", y[tr], y[te], num_classes, warn, num_classes_from)
    return Dataset(x[tr], y[tr], x[te], y[te], num_classes=k, name=f"digits(seed={seed})")


# ------------------------------------------------------------------------------------------- npz
def _images(path: str, key: str, a: np.ndarray) -> np.ndarray:
    """Validate one image array and return it as uint8 N x C x H x W."""
    allowed = "uint8 0..255 or float in [0, 1], shape N x H x W or N x C x H x W"
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or min(a.shape) < 1:
        raise DataError(f"{path}: array {key} has shape {a.shape}; allowed: {allowed}")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
            lo, hi = (float(np.nanmin(a)), float(np.nanmax(a))) if np.isfinite(a).any() else (np.nan, np.nan)
            raise DataError(f"{path}: array {key} is float with values in [{lo:g}, {hi:g}] (or non-finite); "
                            f"allowed: {allowed}")
        return round_half_up_to_uint8(a * 255.0)
    raise DataError(f"{path}: array {key} has dtype {a.dtype}; allowed: {allowed}")


def _labels(path: str, key: str, a: np.ndarray, n: int) -> np.ndarray:
    if a.ndim != 1 or a.shape[0] != n:
        raise DataError(f"{path}: array {key} has shape {a.shape}; allowed: 1-D with {n} labels (one per image)")
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise DataError(f"{path}: array {key} holds non-integer values; allowed: integer class labels >= 0")
    elif not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"{path}: array {key} has dtype {a.dtype}; allowed: integer class labels >= 0")
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise DataError(f"{path}: array {key} has label {int(a.min())} out of range; allowed: integers in [0, K)")
    return a


def load_npz(path: str | os.PathLike, num_classes: Optional[int] = None, warn: Optional[Warn] = None,
             num_classes_from: str = "--num-classes") -> Dataset:
    """Load and validate a user .npz (see module docstring). DataError names file, array, what's allowed."""
    path = str(path)
    if not Path(path).is_file():
        raise DataError(f"{path}: data file not found; allowed: an .npz with arrays {', '.join(ARRAYS)}")
    check_npz_members(path, DataError, f".npz with arrays {', '.join(ARRAYS)}")  # hostile sizes: issue 22
    try:
        with np.load(path, allow_pickle=False) as z:
            present = set(z.files)
            missing = [k for k in ARRAYS if k not in present]
            if missing:
                raise DataError(f"{path}: missing array(s) {', '.join(missing)}; required: {', '.join(ARRAYS)}")
            raw = {k: z[k] for k in ARRAYS}
    except DataError:
        raise
    except Exception as e:  # not a zip / corrupt / pickled objects
        raise DataError(f"{path}: not a readable .npz ({type(e).__name__}); allowed: numpy .npz with arrays "
                        f"{', '.join(ARRAYS)}") from e
    x_tr = _images(path, "x_train", raw["x_train"])
    x_te = _images(path, "x_test", raw["x_test"])
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"{path}: array x_test has per-image shape {x_te.shape[1:]} but x_train has "
                        f"{x_tr.shape[1:]}; allowed: the same C x H x W in both")
    y_tr = _labels(path, "y_train", raw["y_train"], x_tr.shape[0])
    y_te = _labels(path, "y_test", raw["y_test"], x_te.shape[0])
    k = check_labels(path, y_tr, y_te, num_classes, warn, num_classes_from)
    return Dataset(x_tr, y_tr, x_te, y_te, num_classes=k, name=Path(path).name)


def load_dataset(path: Optional[str | os.PathLike] = None, seed: int = 0, num_classes: Optional[int] = None,
                 warn: Optional[Warn] = None, num_classes_from: str = "--num-classes", augment: Optional[str] = None,
                 workers: int = 0):
    """`path` None -> embedded digits (split by `seed`); a directory -> an image folder (`image_folder`); else a
    user .npz (its own split, `seed` unused). `num_classes`, `warn`, `num_classes_from`: the label checks of
    `check_labels`. `augment` (None: none): the training augmentation; `workers`: DataLoader workers."""
    augment = check_augment(augment)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise DataError(f"--workers {workers!r}: allowed: an integer >= 0 (0 loads data in the main process)")
    if num_classes is not None:
        check_num_classes(num_classes, num_classes_from)  # before the file is read
    if path is not None and Path(path).is_dir():
        from na_deploy.data.image_folder import load_folder

        return load_folder(path, num_classes, warn, num_classes_from, augment, workers)
    if augment in RESIZING:
        raise DataError(f"--augment {augment}: resizes images, which needs an image folder (--data DIR); allowed "
                        f"for npz data and the embedded digits: none, cifar")
    if path is None:
        ds = load_digits_dataset(seed, num_classes, warn, num_classes_from)
    else:
        ds = load_npz(path, num_classes, warn, num_classes_from)
    ds.augment, ds.workers = augment, workers
    return ds


# --------------------------------------------------------------------------------------- batching
def batches(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = False,
            generator: Optional[torch.Generator] = None,
            device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 images, int64 labels) tensors on `device`. With `shuffle`, the order comes from
    `generator` (seeded by the caller), so the same seed gives the same batches."""
    if batch_size < 1:
        raise DataError(f"batch_size: must be >= 1, got {batch_size}")
    n = len(y)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        yield xt[idx].to(device), yt[idx].to(device)

