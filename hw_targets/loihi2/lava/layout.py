"""Layouts and weights between the IR and Lava (docs/contract.md: Lava facts; contract C3, C5).

* A population of IR shape (C, H, W) lives in Lava layout (W, H, C) (what Lava's Conv reads and writes); any
  other shape lives flat, (prod(shape),), in the IR's C order. `to_lava_layout` / `from_lava_layout` convert
  (B, *shape) arrays.
* Dense: the columns of W are permuted from a (C, H, W) source's flatten order to the (W, H, C) flatten order
  of its Lava-layout source (`dense_weights_for_lava`).
* Conv2d: `w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)` (scipy's convolve2d is a true convolution).
* AvgPool2d(k, s, g): a grouped Conv with kernel g * ones.
* Lava's fixed_pt Dense / Sparse clip and truncate their weights on the first step: `lava_kept_weights` says
  what they keep, and `check_lava_keeps` refuses a weight Lava would change (never a silent change).

Importing this module does not start Lava's runtime (`lava.utils.weightutils` is plain numpy).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights

from na_deploy.errors import FitError
from na_deploy.ir import AvgPool2d, Synapse

LAVA_WEIGHT_BITS = 8  # Lava's Dense / Sparse default num_weight_bits


def lava_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Lava layout of an IR population shape: (C, H, W) -> (W, H, C); anything else -> (prod,)."""
    shape = tuple(int(s) for s in shape)
    return shape[::-1] if len(shape) == 3 else (int(np.prod(shape)),)


def to_lava_layout(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(B, *shape) IR arrays -> (B, *lava_shape(shape))."""
    x = np.asarray(x)
    if len(shape) == 3:
        return np.ascontiguousarray(x.transpose(0, 3, 2, 1))
    return x.reshape(x.shape[0], -1)


def from_lava_layout(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(B, *lava_shape(shape)) -> (B, *shape) IR arrays (inverse of `to_lava_layout`)."""
    x = np.asarray(x)
    if len(shape) == 3:
        return np.ascontiguousarray(x.transpose(0, 3, 2, 1))
    return x.reshape(x.shape[0], *shape)


def per_neuron(bias: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Per-channel bias (C,) broadcast over a node's IR shape (C, ...)."""
    b = np.asarray(bias, dtype=np.int64)
    return np.broadcast_to(b.reshape((-1,) + (1,) * (len(shape) - 1)), shape).copy()


def dense_weights_for_lava(weight: np.ndarray, source_shape: tuple[int, ...]) -> np.ndarray:
    """W' such that W' @ flatten_C(x_lava) == W @ flatten_C(x_ir): permute the columns of a (C, H, W)
    source into (W, H, C) order; other sources are already flat in IR order."""
    w = np.asarray(weight).astype(np.int64)
    if len(source_shape) != 3:
        return w
    c, h, wd = source_shape
    return np.ascontiguousarray(w.reshape(w.shape[0], c, h, wd).transpose(0, 3, 2, 1).reshape(w.shape[0], -1))


def conv_weights_for_lava(weight: np.ndarray) -> np.ndarray:
    """torch (Cout, Cin/g, kh, kw) cross-correlation -> Lava (Cout, kw, kh, Cin/g) true-convolution kernel."""
    return np.ascontiguousarray(np.asarray(weight).astype(np.int64)[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))


def pool_weights_for_lava(op: AvgPool2d, channels: int) -> np.ndarray:
    """AvgPool2d(k, s, g) as a grouped Conv kernel: g * ones, shape (C, kw, kh, 1)."""
    kh, kw = op.kernel
    return np.full((channels, kw, kh, 1), int(op.weight), dtype=np.int64)


def lava_kept_weights(weights) -> np.ndarray:
    """What Lava's fixed_pt Dense / Sparse model will actually use (its first-step clip to 8 bits and
    truncation with the default num_weight_bits=8 and the sign mode it determines itself)."""
    dense = weights.toarray() if sp.issparse(weights) else np.asarray(weights)
    mode = determine_sign_mode(dense)
    return truncate_weights(clip_weights(dense, mode, num_bits=LAVA_WEIGHT_BITS), mode,
                            LAVA_WEIGHT_BITS).astype(np.int64)


def check_lava_keeps(weights: np.ndarray, node: str, syn: Synapse) -> None:
    """FitError naming the node, the synapse and the first weight that Lava's Dense / Sparse would change."""
    kept = lava_kept_weights(weights)
    bad = np.argwhere(kept != np.asarray(weights))
    if bad.size:
        i = tuple(int(a) for a in bad[0])
        raise FitError(f"node {node}: {syn.op.kind} weight from {syn.source} at {i} is {int(weights[i])}, which "
                       f"Lava's Dense/Sparse would change to {int(kept[i])}; allowed: 8-bit values that Lava keeps "
                       "(even in [-256, 254] for mixed-sign matrices, [0, 255] / [-255, 0] otherwise)")


__all__ = ["lava_shape", "to_lava_layout", "from_lava_layout", "per_neuron", "dense_weights_for_lava",
           "conv_weights_for_lava", "pool_weights_for_lava", "lava_kept_weights", "check_lava_keeps"]
