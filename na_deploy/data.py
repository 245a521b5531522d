"""Data sets, normalisation and batching (issue 2; DESIGN C4).

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
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from .errors import DataError
from .rounding import round_half_up

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
DIGITS_TEST_SIZE = 360
Warn = Callable[[str], None]  # receives one line, "warning: ..."


@dataclass(frozen=True)
class Normalization:
    """x_norm = x_uint8 * channel_scale[c] (per channel, no mean; folds into the first conv, C4)."""

    channel_scale: tuple[float, ...]

    @classmethod
    def from_scale(cls, scale) -> "Normalization":
        return cls(tuple(float(s) for s in np.asarray(scale, dtype=np.float64).reshape(-1)))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (or integer-valued float) N x C x H x W -> float32 normalised input."""
        scale = torch.tensor(self.channel_scale, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        return x.to(torch.float32) * scale


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


# ----------------------------------------------------------------------------------------- labels
def _few(values: np.ndarray, limit: int = 5) -> str:
    """'3, 4, 5, 6, 7, ...' -- a short, one-line list of class labels."""
    head = ", ".join(str(int(v)) for v in values[:limit])
    return head if len(values) <= limit else f"{head}, ..."


def check_num_classes(num_classes, option: str = "--num-classes") -> int:
    """`num_classes` as an int >= 2, else a one-line DataError naming `option`."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise DataError(f"{option} {num_classes!r}: must be an integer >= 2 (the number of classes the network "
                        f"outputs)")
    return int(num_classes)


def check_labels(name: str, y_train: np.ndarray, y_test: np.ndarray, num_classes: Optional[int] = None,
                 warn: Optional[Warn] = None, num_classes_from: str = "--num-classes") -> int:
    """K, the number of classes, for int64 labels >= 0; a one-line DataError naming `name` and the array.

    `num_classes` None: K = 1 + the largest y_train label, and every class 0..K-1 must occur in y_train.
    Given (by `num_classes_from`, e.g. --num-classes or a checkpoint): every label must be < K; classes
    without training examples are allowed and reported through `warn` (default: `warnings.warn`), one line.
    Always: at least 2 classes occur in y_train, and y_test uses only classes that y_train uses."""
    if num_classes is not None:
        k = check_num_classes(num_classes, num_classes_from)
        stated = f"K = {k} from {num_classes_from}"
        for key, y in (("y_train", y_train), ("y_test", y_test)):
            if y.size and int(y.max()) >= k:
                raise DataError(f"{name}: array {key} has label {int(y.max())} out of range; allowed: integers "
                                f"in [0, {k}) ({stated})")
    else:
        k, stated = int(y_train.max()) + 1, "K = 1 + the largest y_train label"
    counts = np.bincount(y_train, minlength=k)
    present, empty = np.flatnonzero(counts), np.flatnonzero(counts == 0)
    if len(present) < 2:
        raise DataError(f"{name}: array y_train has a single class (label {int(present[0])}); allowed: labels of "
                        f"at least 2 classes")
    if num_classes is None and empty.size:
        raise DataError(f"{name}: array y_train leaves {empty.size} of its {k} classes empty (no example of "
                        f"{_few(empty)}; {stated}); allowed: every label 0..K-1 used, or state K with "
                        f"--num-classes K to train with empty classes")
    if y_test.size and int(y_test.max()) >= k:
        raise DataError(f"{name}: array y_test has label {int(y_test.max())} out of range; allowed: integers in "
                        f"[0, {k}) ({stated})")
    unseen = np.setdiff1d(np.unique(y_test), present)
    if unseen.size:
        raise DataError(f"{name}: array y_test has label(s) {_few(unseen)} that y_train never uses; allowed: the "
                        f"{len(present)} classes of y_train")
    if empty.size:
        message = (f"warning: {name}: {empty.size} of the {k} classes ({stated}) have no example in y_train "
                   f"({_few(empty)}); the network still gets {k} outputs")
        if warn is not None:
            warn(message)
        else:
            warnings.warn(message, stacklevel=3)
    return k


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
                 warn: Optional[Warn] = None, num_classes_from: str = "--num-classes") -> Dataset:
    """`path` None -> embedded digits (split by `seed`); else a user .npz (its own split, `seed` unused).
    `num_classes`, `warn`, `num_classes_from`: the label checks of `check_labels`."""
    if num_classes is not None:
        check_num_classes(num_classes, num_classes_from)  # before the file is read
    if path is None:
        return load_digits_dataset(seed, num_classes, warn, num_classes_from)
    return load_npz(path, num_classes, warn, num_classes_from)


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


@dataclass
class Loaders:
    """Seeded batch iterators over a Dataset: `train()` reshuffles on every call from one generator."""

    dataset: Dataset
    batch_size: int
    seed: int = 0
    device: torch.device | str = "cpu"

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(int(self.seed))

    def train(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        d = self.dataset
        return batches(d.x_train, d.y_train, self.batch_size, True, self.generator, self.device)

    def test(self, batch_size: Optional[int] = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        d = self.dataset
        return batches(d.x_test, d.y_test, batch_size or max(self.batch_size, 256), False, None, self.device)

    def num_train_batches(self) -> int:
        return -(-len(self.dataset.y_train) // self.batch_size)


def make_loaders(dataset: Dataset, batch_size: int, seed: int = 0, device: torch.device | str = "cpu") -> Loaders:
    return Loaders(dataset, batch_size, seed, device)
