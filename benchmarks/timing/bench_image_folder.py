"""Image-folder data (issue 13 item 2): make a small coloured-shapes ImageFolder and measure the folder loader.

    python benchmarks/timing/bench_image_folder.py make DIR [--size 32 --train 40 --val 10 --seed 0]
        writes DIR/train/<shape>/*.png and DIR/val/<shape>/*.png: 10 classes (one shape each), random colours,
        positions, sizes and background noise, seeded (the same seed gives the same bytes)
    python benchmarks/timing/bench_image_folder.py speed DIR [--augment cifar --batch-size 64 --epochs 3]
        images/s of one training epoch through make_loaders(...).train() with 0 and 2 workers (best of --epochs),
        and whether both give identical batches
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "hbar", "vbar", "ring", "diamond", "xmark", "dots")


def _draw(draw, shape: str, box: tuple[int, int, int, int], colour: tuple[int, int, int], width: int) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour)
    elif shape == "cross":
        draw.rectangle((cx - width, y0, cx + width, y1), fill=colour)
        draw.rectangle((x0, cy - width, x1, cy + width), fill=colour)
    elif shape == "hbar":
        draw.rectangle((x0, cy - width, x1, cy + width), fill=colour)
    elif shape == "vbar":
        draw.rectangle((cx - width, y0, cx + width, y1), fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(2, width))
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour)
    elif shape == "xmark":
        draw.line((x0, y0, x1, y1), fill=colour, width=max(2, width))
        draw.line((x0, y1, x1, y0), fill=colour, width=max(2, width))
    else:  # dots
        for dx in (x0 + 2, x1 - 2):
            for dy in (y0 + 2, y1 - 2):
                draw.ellipse((dx - width, dy - width, dx + width, dy + width), fill=colour)


def make_shapes(root: str | Path, size: int = 32, n_train: int = 40, n_val: int = 10, seed: int = 0,
                classes: int = 10) -> Path:
    """Write the coloured-shapes folder (PNG, RGB, size x size) under `root`; returns `root`."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, n in (("train", n_train), ("val", n_val)):
        for shape in SHAPES[:classes]:
            folder = root / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                bg = rng.integers(0, 90, size=3)
                noise = rng.integers(-20, 21, size=(size, size, 3))
                img = Image.fromarray(np.clip(bg + noise, 0, 255).astype(np.uint8), "RGB")
                s = int(rng.integers(size // 2, size - 4))
                x0, y0 = (int(v) for v in rng.integers(1, size - s, size=2))
                colour = tuple(int(v) for v in rng.integers(120, 256, size=3))
                _draw(ImageDraw.Draw(img), shape, (x0, y0, x0 + s, y0 + s), colour, max(1, s // 8))
                img.save(folder / f"{i:04d}.png")
    return root


def speed(data: str, augment: str, batch_size: int, epochs: int) -> None:
    import torch

    from na_deploy.data.arrays import load_dataset, make_loaders

    batches = {}
    for workers in (0, 2):
        t0 = time.perf_counter()
        ds = load_dataset(data, augment=augment, workers=workers)
        load_s = time.perf_counter() - t0
        loaders = make_loaders(ds, batch_size, seed=0)
        best, first = float("inf"), None
        for _ in range(epochs):
            t0 = time.perf_counter()
            got = [(x.clone(), y.clone()) for x, y in loaders.train()]
            best = min(best, time.perf_counter() - t0)
            first = first or got
        batches[workers] = first
        print(f"workers={workers}: load_dataset {load_s:.2f} s (scan + std); train epoch of {ds.num_train} images "
              f"{ds.input_shape}, augment {augment}: best {best:.3f} s of {epochs} = "
              f"{ds.num_train / best:.0f} images/s")
    same = all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches[0], batches[2]))
    print(f"first epoch identical with 0 and 2 workers: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make")
    mk.add_argument("dir")
    mk.add_argument("--size", type=int, default=32)
    mk.add_argument("--train", type=int, default=40)
    mk.add_argument("--val", type=int, default=10)
    mk.add_argument("--seed", type=int, default=0)
    sp = sub.add_parser("speed")
    sp.add_argument("dir")
    sp.add_argument("--augment", default="cifar")
    sp.add_argument("--batch-size", type=int, default=64)
    sp.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()
    if a.cmd == "make":
        make_shapes(a.dir, a.size, a.train, a.val, a.seed)
        print(f"wrote {a.dir}: 10 classes x {a.train} train / {a.val} val, {a.size}x{a.size} PNG")
    else:
        speed(a.dir, a.augment, a.batch_size, a.epochs)


if __name__ == "__main__":
    main()
