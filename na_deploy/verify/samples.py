"""Which test images the verify gate runs on: the first N of a data set's test split, or one shard's share.

`select_samples(net, data, N, shard)` -> (inputs, sample ids): `data` is an .npz or an image folder
(`na_deploy.data.arrays.load_dataset`; None: the embedded 8x8 digits), only the N images used are decoded; with
`shard="i/n"` the ids are those of shard i (`na_deploy.verify.shards.shard_indices`: sample k is in shard
k mod n + 1). The ids are the images' positions in the test split, so reports of shards merge by id.
`check_golden_inputs(golden, inputs, ids)`: a golden file's stored samples must be the ones being run.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from na_deploy.errors import DataError
from na_deploy.ir import IntNet


def load_inputs(net: IntNet, data: Optional[str], samples: int) -> np.ndarray:
    """The first `samples` test images of `data` (uint8 pixels, the net's input shape); DataError (one line
    naming the data) when their shape differs from the net's input or the split holds fewer images."""
    from na_deploy.data.arrays import load_dataset
    from na_deploy.data.loaders import first_test_images

    ds = load_dataset(data)
    name = data or "embedded digits"
    if tuple(ds.input_shape) != tuple(net.input.shape):
        raise DataError(f"{name}: x_test images have shape {tuple(ds.input_shape)}; the net's input needs "
                        f"{tuple(net.input.shape)}")
    if samples < 1:
        raise DataError(f"--samples must be >= 1, got {samples}")
    if samples > ds.num_test:
        raise DataError(f"--samples {samples}: {name} has only {ds.num_test} test images")
    return first_test_images(ds, samples)[0]  # a folder: only these images are decoded


def select_samples(net: IntNet, data: Optional[str], samples: int,
                   shard: Optional[str] = None) -> tuple[np.ndarray, list[int]]:
    """(inputs, sample ids): the first `samples` test images, or shard "i/n"'s share of them (a shard count
    above the sample count is refused: every shard gets at least one sample)."""
    x = load_inputs(net, data, samples)
    ids = np.arange(len(x))
    if shard:
        from na_deploy.verify.shards import parse_shard, shard_indices

        i, n = parse_shard(shard)
        ids = shard_indices(len(x), i, n)
    return x[ids], [int(i) for i in ids]


__all__ = ["load_inputs", "select_samples", "check_golden_inputs"]


def check_golden_inputs(golden: Any, inputs: Any, sample_ids: Optional[Sequence[int]] = None) -> None:
    """GoldenError (a bad request, exit 2: README's exit codes) unless the samples being run are those of the
    loaded golden file `golden` (`na_deploy.verify.golden.Golden`): the same ids (when given), shape and pixels,
    compared exactly. A golden difference then means the net or the backend changed, never that other data
    was run (issue 22)."""
    from na_deploy.verify.golden import GoldenError

    x, stored = np.asarray(inputs), golden.inputs
    why = ("its sample ids are not the run's (use the same --data and --samples, no --shard)"
           if sample_ids is not None and [int(i) for i in sample_ids] != golden.sample_ids.tolist() else
           f"shape {stored.shape} stored, {x.shape} run" if x.shape != stored.shape else None)
    bad = np.argwhere(stored != x) if why is None else ()
    if len(bad):
        at = tuple(int(i) for i in bad[0])
        why = (f"{len(bad)} value(s) differ, first in sample {int(golden.sample_ids[at[0]])} at {at[1:]}: stored "
               f"{stored[at]}, run {x[at]}")
    if why:
        raise GoldenError(f"{golden.path}: golden inputs differ from the samples run: {why}")
