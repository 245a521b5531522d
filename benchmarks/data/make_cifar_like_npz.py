"""Write a generated CIFAR-shaped data set (3x32x32 uint8, 10 classes) in the `--data` npz layout, for smoke runs
of the CIFAR presets (`na-deploy pipeline --preset cifar10-resnet18-smoke --data OUT.npz`) without a download:

    .venv/bin/python benchmarks/data/make_cifar_like_npz.py [OUT.npz] [--train 400] [--test 100] [--seed 0]

Class k = one of 5 shapes (disk, square, triangle, cross, ring) x 2 textures (solid, stripes), each class with
its own base colour; every image jitters position, size, colour, stripe phase / direction, background colour
and adds pixel noise, so the classes are learnable but not trivially so. Balanced classes (train and test
each cycle through 0..9). Seeded and byte-deterministic: same arguments, same file (no zip timestamps);
written atomically (na_deploy.atomic).
"""
from __future__ import annotations

import argparse

import numpy as np

from na_deploy.atomic import atomic_write_bytes
from na_deploy.verify.golden import npz_bytes

SIZE = 32
SHAPES = ("disk", "square", "triangle", "cross", "ring")
BASE_COLOURS = np.array([[220, 40, 40], [40, 200, 60], [50, 80, 230], [230, 200, 40], [200, 60, 200],
                         [40, 200, 210], [240, 140, 30], [150, 90, 40], [230, 230, 230], [120, 120, 255]], float)


def shape_mask(kind: str, cx: float, cy: float, r: float) -> np.ndarray:
    """Boolean (32, 32) mask of one shape centred at (cx, cy) with radius r."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    dx, dy = xx - cx, yy - cy
    if kind == "disk":
        return dx ** 2 + dy ** 2 <= r ** 2
    if kind == "square":
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    if kind == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    if kind == "cross":
        w = max(1.5, r * 0.35)
        return ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    if kind == "ring":
        d2 = dx ** 2 + dy ** 2
        return (d2 <= r ** 2) & (d2 >= (0.55 * r) ** 2)
    raise ValueError(f"unknown shape {kind!r}; known: {', '.join(SHAPES)}")


def make_image(rng: np.random.Generator, label: int) -> np.ndarray:
    """One (3, 32, 32) uint8 image of class `label` (0..9)."""
    kind, striped = SHAPES[label % 5], label >= 5
    r = rng.uniform(6.0, 11.0)
    cx, cy = rng.uniform(r, SIZE - r, size=2)
    mask = shape_mask(kind, cx, cy, r)
    if striped:
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        period = int(rng.integers(3, 6))
        lines = (xx + yy if rng.random() < 0.5 else xx - yy) + int(rng.integers(0, period))
        mask = mask & ((lines // max(1, period // 2)) % 2 == 0)
    bg = rng.uniform(0, 90, size=3)
    fg = np.clip(BASE_COLOURS[label] + rng.normal(0, 20, size=3), 0, 255)
    img = np.empty((3, SIZE, SIZE))
    img[:] = bg[:, None, None]
    img[:, mask] = fg[:, None]
    img += rng.normal(0, 12, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_split(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = (np.arange(n) % 10).astype(np.int64)
    rng.shuffle(y)
    return np.stack([make_image(rng, int(k)) for k in y]), y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="cifar_like.npz")
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.train < 10 or args.test < 10:
        ap.error(f"--train {args.train} / --test {args.test}: allowed: >= 10 each (every class in both splits)")
    rng = np.random.default_rng(args.seed)
    x_tr, y_tr = make_split(rng, args.train)
    x_te, y_te = make_split(rng, args.test)
    atomic_write_bytes(args.out, npz_bytes(dict(x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)))
    print(f"wrote {args.out}: {args.train} train / {args.test} test, 3x32x32 uint8, 10 classes, seed {args.seed}")


if __name__ == "__main__":
    main()
