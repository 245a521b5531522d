"""Training augmentations and evaluation views of uint8 images (issue 13 item 2; contract C4).

Every view takes and returns raw uint8 pixels (C x H x W): normalisation stays a per-channel scale folded into
the first layer (C4), so no transform here shifts or scales pixel values. Three augmentations, one per preset:

    none      train = eval = the image as it is (every image of a data set must have one size)
    cifar     train: zero-pad 4 pixels on each side, random H x W crop, horizontal flip with probability 1/2;
              eval: the image as it is (one size for every image)
    imagenet  train: RandomResizedCrop to 224 x 224 (area 8-100 % of the image, aspect ratio 3/4-4/3, up to
              10 tries then a centre crop; torchvision's rule), bilinear resize (Pillow), flip with p = 1/2;
              eval: bilinear resize of the shorter side to 256, centre crop 224 x 224 (any input size)

Randomness comes only from the `numpy.random.Generator` passed in (one per sample, seeded by the caller from
the epoch's seed and the sample's position in the epoch), so the same seed gives the same pixels in any
process, with any number of DataLoader workers. Implemented with numpy + Pillow (no torchvision needed).
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np

from na_deploy.errors import DataError

AUGMENTATIONS = ("none", "cifar", "imagenet")
RESIZING = ("imagenet",)  # augmentations whose views have a fixed size whatever the image's size
CIFAR_PAD = 4
IMAGENET_CROP = 224
IMAGENET_RESIZE = 256
IMAGENET_SCALE = (0.08, 1.0)
IMAGENET_RATIO = (3.0 / 4.0, 4.0 / 3.0)

Image = Union[np.ndarray, "PIL.Image.Image"]  # noqa: F821  (uint8 C x H x W array or a decoded Pillow image)


def check_augment(name, option: str = "--augment") -> str:
    """`name` (None -> "none") if it is a known augmentation, else a one-line DataError naming `option`."""
    name = "none" if name is None else name
    if name not in AUGMENTATIONS:
        raise DataError(f"{option} {name!r}: unknown augmentation; allowed: {', '.join(AUGMENTATIONS)}")
    return name


def view_shape(augment: str, channels: int, height: int, width: int) -> tuple[int, int, int]:
    """C x H x W of what the network sees (train and eval views have the same shape)."""
    if augment in RESIZING:
        return channels, IMAGENET_CROP, IMAGENET_CROP
    return channels, height, width


# ------------------------------------------------------------------------------------ conversions
def to_array(img: Image) -> np.ndarray:
    """uint8 C x H x W from an array (returned as is) or a Pillow image (mode L or RGB)."""
    if isinstance(img, np.ndarray):
        return img
    a = np.array(img, dtype=np.uint8)  # a writable copy (torch.from_numpy refuses read-only buffers quietly)
    return np.ascontiguousarray(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))


def to_pil(img: Image):
    """A Pillow image (L for 1 channel, RGB for 3) from a C x H x W uint8 array (a Pillow image as is)."""
    from PIL import Image as PILImage

    if not isinstance(img, np.ndarray):
        return img
    if img.shape[0] not in (1, 3):
        raise DataError(f"augment imagenet: images have {img.shape[0]} channels; allowed: 1 or 3")
    return PILImage.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))


# ---------------------------------------------------------------------------------------- cifar
def cifar_train(img: Image, rng: np.random.Generator) -> np.ndarray:
    """Zero padding 4, random crop back to H x W (offsets 0..8 each), horizontal flip with p = 1/2."""
    a = to_array(img)
    c, h, w = a.shape
    padded = np.zeros((c, h + 2 * CIFAR_PAD, w + 2 * CIFAR_PAD), dtype=np.uint8)
    padded[:, CIFAR_PAD:CIFAR_PAD + h, CIFAR_PAD:CIFAR_PAD + w] = a
    dy, dx = (int(v) for v in rng.integers(0, 2 * CIFAR_PAD + 1, size=2))
    out = padded[:, dy:dy + h, dx:dx + w]
    if rng.random() < 0.5:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


# ------------------------------------------------------------------------------------- imagenet
def _resized_crop_box(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(left, top, w, h) of torchvision's RandomResizedCrop.get_params, drawn from `rng`."""
    area = width * height
    log_lo, log_hi = math.log(IMAGENET_RATIO[0]), math.log(IMAGENET_RATIO[1])
    for _ in range(10):
        target = area * rng.uniform(*IMAGENET_SCALE)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, w, h
    ratio = width / height  # fallback: the centre crop with the nearest allowed aspect ratio
    if ratio < IMAGENET_RATIO[0]:
        w, h = width, int(round(width / IMAGENET_RATIO[0]))
    elif ratio > IMAGENET_RATIO[1]:
        h, w = height, int(round(height * IMAGENET_RATIO[1]))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def imagenet_train(img: Image, rng: np.random.Generator) -> np.ndarray:
    """RandomResizedCrop(224) with bilinear resampling, then a horizontal flip with p = 1/2."""
    from PIL import Image as PILImage

    pil = to_pil(img)
    left, top, w, h = _resized_crop_box(pil.width, pil.height, rng)
    out = pil.resize((IMAGENET_CROP, IMAGENET_CROP), PILImage.BILINEAR, box=(left, top, left + w, top + h))
    a = to_array(out)
    if rng.random() < 0.5:
        a = np.ascontiguousarray(a[:, :, ::-1])
    return a


def imagenet_eval(img: Image) -> np.ndarray:
    """Shorter side to 256 (bilinear; the longer side int(256 * long / short)), centre crop 224 x 224."""
    from PIL import Image as PILImage

    pil = to_pil(img)
    w, h = pil.width, pil.height
    if w <= h:
        size = (IMAGENET_RESIZE, int(IMAGENET_RESIZE * h / w))
    else:
        size = (int(IMAGENET_RESIZE * w / h), IMAGENET_RESIZE)
    pil = pil.resize(size, PILImage.BILINEAR)
    left = int(round((size[0] - IMAGENET_CROP) / 2.0))
    top = int(round((size[1] - IMAGENET_CROP) / 2.0))
    return to_array(pil.crop((left, top, left + IMAGENET_CROP, top + IMAGENET_CROP)))


# ------------------------------------------------------------------------------------ dispatch
def train_view(augment: str, img: Image, rng: np.random.Generator) -> np.ndarray:
    """The augmented training view (uint8 C x H x W) of one image."""
    if augment == "cifar":
        return cifar_train(img, rng)
    if augment == "imagenet":
        return imagenet_train(img, rng)
    return to_array(img)


def eval_view(augment: str, img: Image) -> np.ndarray:
    """The deterministic evaluation view (uint8 C x H x W) of one image."""
    if augment == "imagenet":
        return imagenet_eval(img)
    return to_array(img)


def sample_rng(epoch_seed: int, position: int) -> np.random.Generator:
    """The generator of the sample at `position` in an epoch whose augmentation seed is `epoch_seed`."""
    return np.random.Generator(np.random.PCG64([int(epoch_seed), int(position)]))


__all__ = ["AUGMENTATIONS", "check_augment", "eval_view", "sample_rng", "train_view", "view_shape"]
