"""The one place that checks what users pass to every stage: time steps T, pixel inputs, p.

Each check returns the value in canonical form or raises one error with a one-line message that names the
option and what is allowed. Simulators, backends, verify and the CLI all call these (never a copy).
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from na_deploy.errors import ModelError, SimulationError

PIXEL_MAX = 255  # raw uint8 pixels enter the first layer as graded spikes (C4)


def _as_int(t: Any) -> Optional[int]:
    """t as an int when it is an integer value (not a bool), else None."""
    if isinstance(t, (bool, np.bool_)):
        return None
    try:
        return int(t) if float(t).is_integer() else None
    except (TypeError, ValueError, OverflowError):
        return None


def check_timesteps(timesteps: Union[int, Iterable[int]], max_timesteps: Optional[int] = None) -> list[int]:
    """T (one or many) -> sorted unique ints in [1, max_timesteps]; SimulationError otherwise.

    max_timesteps: the largest T an IntNet's static 24-bit bound is proven for (its meta `max_timesteps`);
    None: no upper limit (float simulation)."""
    ts = [timesteps] if np.ndim(timesteps) == 0 else list(timesteps)
    hi = f"1..{max_timesteps}" if max_timesteps is not None else "integers >= 1"
    out = []
    for t in ts:
        v = _as_int(t)
        if v is None:
            raise SimulationError(f"timesteps: {t!r} is not an integer; allowed: {hi}")
        if v < 1 or (max_timesteps is not None and v > max_timesteps):
            bound = (f" (the static 24-bit bound of this net is proven for T <= meta max_timesteps = "
                     f"{max_timesteps}; re-run convert with --max-timesteps)" if max_timesteps is not None else "")
            raise SimulationError(f"timesteps: T = {v} outside {hi}{bound}")
        out.append(v)
    if not out:
        raise SimulationError("timesteps: empty list; give at least one T")
    return sorted(set(out))


def check_timestep(timesteps: Any, max_timesteps: Optional[int] = None) -> int:
    """One T (see `check_timesteps`)."""
    if np.ndim(timesteps) != 0:
        raise SimulationError(f"timesteps: expected one integer T, got {timesteps!r}")
    return check_timesteps(timesteps, max_timesteps)[0]


def check_pixels(inputs: Any, input_shape: Sequence[int], pixel_max: int = PIXEL_MAX) -> np.ndarray:
    """(B, *input_shape) integer pixels in [0, pixel_max] -> int64 array; SimulationError otherwise.

    One rule for every simulator and backend (C4): an integer (or bool) dtype; floats are refused, even
    whole-valued ones (convert float data in [0, 1] with `na_deploy.data.arrays`, round half up of x * 255)."""
    x = np.asarray(inputs)
    want = tuple(int(s) for s in input_shape)
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
        raise SimulationError(f"inputs: shape {tuple(x.shape)} does not match (B, {', '.join(map(str, want))}) "
                              "for this net's input")
    if x.shape[0] < 1:
        raise SimulationError("inputs: batch is empty; give at least one sample")
    if not (np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
        raise SimulationError(f"inputs: dtype {x.dtype} is not an integer type; give raw pixels "
                              f"(uint8 0..{pixel_max}, C4)")
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi > pixel_max:
        raise SimulationError(f"inputs: pixel values span [{lo}, {hi}]; allowed [0, {pixel_max}] (C4)")
    return x.astype(np.int64)


def check_p(p: Any) -> int:
    """p, the number of positive quantization levels (th = p*s), must be a positive integer."""
    v = _as_int(p)
    if v is None or v < 1:
        raise ModelError(f"p: must be a positive integer (levels; threshold th = p*s), got {p!r}")
    return v


__all__ = ["check_timesteps", "check_timestep", "check_pixels", "check_p", "PIXEL_MAX"]
