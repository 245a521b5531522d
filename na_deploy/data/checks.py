"""What `na_deploy.data.arrays` and `na_deploy.data.image_folder` share: the C4 normalisation and the label checks.

(`data` re-exports every name; this module imports neither, so the two data sources have no import cycle.)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from na_deploy.errors import DataError

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
