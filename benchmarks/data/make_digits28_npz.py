"""Write a 28x28 npz (scikit-learn digits, bilinearly upscaled) in the `--data` layout, for residual-net runs
such as `tiny_resnet`:  .venv/bin/python benchmarks/data/make_digits28_npz.py runs/digits28.npz"""
from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F

from na_deploy.data.arrays import load_dataset, round_half_up_to_uint8


def main(path: str, seed: int = 0) -> None:
    ds = load_dataset(None, seed=seed)

    def up(x: np.ndarray) -> np.ndarray:
        t = F.interpolate(torch.as_tensor(x, dtype=torch.float32), size=(28, 28), mode="bilinear", align_corners=False)
        return round_half_up_to_uint8(t.numpy())

    np.savez_compressed(path, x_train=up(ds.x_train), y_train=ds.y_train, x_test=up(ds.x_test), y_test=ds.y_test)
    print(f"wrote {path}: {len(ds.x_train)} train / {len(ds.x_test)} test, 1x28x28 uint8")


if __name__ == "__main__":
    if len(sys.argv) > 2 or (len(sys.argv) == 2 and sys.argv[1].startswith("-")):
        sys.exit(f"usage: {sys.argv[0]} [OUT.npz]   (default digits28.npz)")
    main(sys.argv[1] if len(sys.argv) > 1 else "digits28.npz")
