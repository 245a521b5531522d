"""Image-folder data sets (`--data DIR`, issue 13 item 2; contract C4).

Layout (torchvision's ImageFolder, one folder per split):
    DIR/train/<class>/*.png|jpg|...     DIR/val/<class>/*.png|jpg|...
Classes are the sub-folder names of train/, sorted; label k = the k-th name. val/ must have the same class
folders. Image files are those with an extension in IMAGE_EXTENSIONS (others and hidden files are skipped),
taken in sorted order; val/ is then interleaved class by class (the i-th image of every class, in class order, before
the (i+1)-th), so that its first N images -- `--eval-samples N`, `--samples N`, the verify samples -- hold every
class in turn, not the first few classes (`interleave_classes`). Every image is decoded with Pillow to RGB, or to
L (one channel) when every image of a non-resizing augmentation is grey. An empty class folder is an empty class
(`check_labels`' rules: refused unless K is stated with --num-classes).

The network sees uint8 pixels (C4): the evaluation view of `transforms` (the image itself, or for augment
imagenet: resize 256 + centre crop 224) and, in training, the augmented view. Augmentations none and cifar do
not resize, so every image (both splits) must have one size; their headers are read up front, which also names
any unreadable file before training. augment imagenet resizes: mixed sizes are fine and its headers are not
read up front (an unreadable file is named when it is first decoded).

Normalisation is a per-channel scale only, 1 / (255 std_c), std_c of the evaluation views of the training split
over all images when there are at most STD_MAX_IMAGES, else of a sample of STD_MAX_IMAGES drawn with
numpy seed 0 (the same for every run). Sums of x and x^2 are exact int64, so the result does not depend on the
order or on the number of workers. The fingerprint hashes the class names, every file's relative path and
byte size and those exact channel sums (it reads no more than the std does; a same-size edit of an image
outside the sample is not detected).
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from na_deploy.data.checks import Normalization, check_labels
from na_deploy.errors import DataError
from na_deploy.data.loaders import Views, stream, test_batches
from na_deploy.data.transforms import RESIZING, check_augment, view_shape

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val")
STD_MAX_IMAGES = 10000
STATS_BATCH = 64
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
LAYOUT = "an image folder with train/<class>/*.png|jpg and val/<class>/... (or an .npz file)"


def decode(path: str, mode: str):
    """The image at `path` as a loaded Pillow image in `mode`; DataError naming the file if Pillow cannot."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert(mode)
    except Exception as e:  # noqa: BLE001 -- any decoder failure is the file's fault
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {' '.join(str(e).split())}); allowed: "
                        f"image files Pillow can read ({', '.join(x[1:] for x in IMAGE_EXTENSIONS)})") from None


class FileSource:
    """index -> the decoded image of files[index] (picklable for DataLoader workers)."""

    def __init__(self, files: list[str], mode: str):
        self.files, self.mode = files, mode

    def __call__(self, i: int):
        return decode(self.files[i], self.mode)


# --------------------------------------------------------------------------------------- scanning
def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_EXTENSIONS)


def _few(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def scan(root: Path) -> tuple[list[str], dict[str, tuple[list[str], np.ndarray]]]:
    """(class names, {split: (files, int64 labels)}); DataError for a missing split or differing classes."""
    for split in SPLITS:
        if not (root / split).is_dir():
            raise DataError(f"{root}: no {split}/ folder; allowed: {LAYOUT}")
    classes = {s: _class_dirs(root / s) for s in SPLITS}
    if not classes["train"]:
        raise DataError(f"{root}/train: no class folders; allowed: {LAYOUT}")
    if classes["train"] != classes["val"]:
        only_tr = sorted(set(classes["train"]) - set(classes["val"]))
        only_va = sorted(set(classes["val"]) - set(classes["train"]))
        raise DataError(f"{root}: classes differ between train/ and val/ (only in train: {_few(only_tr) or '-'}; "
                        f"only in val: {_few(only_va) or '-'}); allowed: the same class folders in both")
    out = {}
    for split in SPLITS:
        files, labels = [], []
        for k, name in enumerate(classes["train"]):
            found = _images_in(root / split / name)
            files += found
            labels += [k] * len(found)
        out[split] = (files, np.asarray(labels, dtype=np.int64))
    out["val"] = interleave_classes(*out["val"])
    if not out["train"][0]:
        raise DataError(f"{root}/train: no image files; allowed: {LAYOUT}")
    return classes["train"], out


def interleave_classes(files: list[str], labels: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Class-major (files, labels) -> round robin over the classes: rank within its class first, then label (a
    stable order: the same folder gives the same order)."""
    rank = np.zeros(len(labels), dtype=np.int64)
    for k in np.unique(labels):
        at = np.flatnonzero(labels == k)
        rank[at] = np.arange(len(at))
    order = np.lexsort((labels, rank))
    return [files[i] for i in order], labels[order]


def check_headers(files: list[str], augment: str) -> str:
    """Read every header: unreadable file named; one size unless the augmentation resizes. Returns the Pillow
    mode the images are decoded to (L when all are grey, else RGB)."""
    from PIL import Image

    first, grey = None, True
    for path in files:
        try:
            with Image.open(path) as im:
                size, mode = im.size, im.mode
        except Exception as e:  # noqa: BLE001
            raise DataError(f"{path}: unreadable image ({type(e).__name__}: {' '.join(str(e).split())}); "
                            f"allowed: image files Pillow can read") from None
        grey = grey and mode in GREY_MODES
        if first is None:
            first = (path, size)
        elif size != first[1]:
            (w0, h0), (w, h) = first[1], size
            raise DataError(f"{path}: image is {w}x{h} but {first[0]} is {w0}x{h0}; allowed: one size for every "
                            f"image with augment {augment} (augment imagenet resizes, so mixed sizes are fine "
                            f"there)")
    return "L" if grey else "RGB"


def channel_sums(source: FileSource, labels: np.ndarray, indices: np.ndarray, augment: str,
                 shape: tuple[int, int, int], workers: int) -> tuple[list[int], list[int], int]:
    """Exact per-channel sums of x and x^2 (python ints) and the pixel count, over the evaluation views of
    `indices`, streamed in batches."""
    views = Views(source, labels, augment)
    keys = [[(int(j), None, 0) for j in indices[i:i + STATS_BATCH]] for i in range(0, len(indices), STATS_BATCH)]
    s = torch.zeros(shape[0], dtype=torch.int64)
    s2 = torch.zeros(shape[0], dtype=torch.int64)
    for xb, _ in stream(views, keys, shape, workers):
        x = xb.to(torch.int64)
        s += x.sum(dim=(0, 2, 3))
        s2 += (x * x).sum(dim=(0, 2, 3))
    return [int(v) for v in s], [int(v) for v in s2], len(indices) * shape[1] * shape[2]


def std_from_sums(s: list[int], s2: list[int], count: int) -> np.ndarray:
    """Population std of x/255 per channel from exact integer sums (a constant channel gets 1, as for npz)."""
    var = np.array([(count * b - a * a) / (count * count) for a, b in zip(s, s2)], dtype=np.float64)
    std = np.sqrt(np.maximum(var, 0.0)) / 255.0
    return np.where(std > 0, std, 1.0)


# ---------------------------------------------------------------------------------------- the set
class FolderDataset:
    """An image folder, streamed: the same attributes as `data.Dataset` (labels in memory, images on demand)."""

    streamed = True

    def __init__(self, root: Path, classes: list[str], splits: dict, num_classes: int, augment: str, mode: str,
                 shape: tuple[int, int, int], workers: int):
        self.root, self.classes, self.num_classes = root, classes, num_classes
        self.train_files, self.y_train = splits["train"]
        self.test_files, self.y_test = splits["val"]
        self.augment, self.mode, self.input_shape, self.workers = augment, mode, shape, workers
        self.name = root.name or str(root)
        self.channel_std, self.fingerprint = None, ""

    @property
    def num_train(self) -> int:
        return len(self.train_files)

    @property
    def num_test(self) -> int:
        return len(self.test_files)

    @property
    def normalization(self):
        return Normalization.from_scale(1.0 / (255.0 * self.channel_std))

    def train_source(self) -> FileSource:
        return FileSource(self.train_files, self.mode)

    def test_source(self) -> FileSource:
        return FileSource(self.test_files, self.mode)

    def train_images(self, indices) -> np.ndarray:
        """Evaluation views of the training images at `indices` (uint8 N x C x H x W), e.g. for calibration."""
        views = Views(self.train_source(), self.y_train, self.augment)
        keys = [[(int(i), None, 0) for i in np.asarray(indices).reshape(-1)]]
        return next(stream(views, keys, self.input_shape, self.workers))[0].numpy()

    @functools.cached_property
    def x_test(self) -> np.ndarray:
        """The whole test split's evaluation views in memory (for stages that take arrays; small sets)."""
        parts = [x for x, _ in test_batches(self, 256)]
        return np.concatenate(parts) if parts else np.zeros((0, *self.input_shape), np.uint8)

    @functools.cached_property
    def x_train(self) -> np.ndarray:
        """The whole training split's evaluation views in memory (small sets only; training streams)."""
        return self.train_images(np.arange(self.num_train))


def load_folder(path: str | os.PathLike, num_classes: Optional[int] = None, warn: Optional[Callable] = None,
                num_classes_from: str = "--num-classes", augment: Optional[str] = None,
                workers: int = 0) -> FolderDataset:
    """Scan, check (layout, classes, labels, headers, sizes) and measure (channel std, fingerprint) a folder."""
    augment = check_augment(augment)
    root = Path(path)
    classes, splits = scan(root)
    if num_classes is None:
        counts = np.bincount(splits["train"][1], minlength=len(classes))
        empty = [classes[k] for k in np.flatnonzero(counts == 0)]
        if empty:
            raise DataError(f"{root}/train: class folder(s) {_few(empty)} hold no image; allowed: at least one "
                            f"image per class, or state K with --num-classes K to train with empty classes")
    k = check_labels(str(root), splits["train"][1], splits["val"][1], num_classes, warn, num_classes_from)
    if augment in RESIZING:
        mode = "RGB"
        shape = view_shape(augment, 3, 0, 0)
    else:
        mode = check_headers(splits["train"][0] + splits["val"][0], augment)
        with decode(splits["train"][0][0], mode) as im:
            shape = view_shape(augment, 1 if mode == "L" else 3, im.height, im.width)
    ds = FolderDataset(root, classes, splits, k, augment, mode, shape, workers)
    n = ds.num_train
    idx = np.arange(n) if n <= STD_MAX_IMAGES else np.sort(np.random.default_rng(0).choice(n, STD_MAX_IMAGES,
                                                                                          replace=False))
    s, s2, count = channel_sums(ds.train_source(), ds.y_train, idx, augment, shape, workers)
    ds.channel_std = std_from_sums(s, s2, count)
    h = hashlib.sha256(f"image-folder v1 {mode} {shape} view={'imagenet' if augment in RESIZING else 'raw'}\n"
                       .encode())
    h.update(("\n".join(classes) + "\n").encode())
    class_major = [f for _, f in sorted(zip(ds.y_test.tolist(), ds.test_files), key=lambda t: t[0])]
    for files in (ds.train_files, class_major):  # the hash of a folder does not depend on the val/ order
        for f in files:
            h.update(f"{os.path.relpath(f, root)}\t{os.path.getsize(f)}\n".encode())
    h.update(f"{s} {s2} {count}\n".encode())
    ds.fingerprint = h.hexdigest()
    return ds


__all__ = ["FolderDataset", "IMAGE_EXTENSIONS", "STD_MAX_IMAGES", "load_folder"]
