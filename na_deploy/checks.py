"""The one place that checks what users pass to every stage: time steps T, pixel inputs, p; and the two
file rules every loader shares: `one_line` (an error message is one line) and `check_npz_members` (an .npz
member may not declare more data than it holds, issue 22).

Each check returns the value in canonical form or raises one error with a one-line message that names the
option and what is allowed. Simulators, backends, verify and the CLI all call these (never a copy).
"""
from __future__ import annotations

import zipfile
from pathlib import Path
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


def one_line(message: str) -> str:
    """`message` with its line breaks and runs of blanks collapsed (an array's repr spans lines)."""
    return " ".join(str(message).split())


MAX_NPZ_ELEMENTS = 2 ** 34
"""The most elements one .npz member may declare (16 G: far above any data set na-deploy trains on)."""


def _npy_header(f, name: str) -> tuple[tuple, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version in ((2, 0), (3, 0)):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"member {name}: .npy format version {version}")
    return tuple(int(s) for s in shape), dtype


def check_npz_members(path: Union[str, Path], error: type, what: str = ".npz file") -> None:
    """`error` (one line naming the file and the member) unless `path` is a zip of .npy members whose headers
    read and each declare at most MAX_NPZ_ELEMENTS elements and no more bytes than the member holds: checked
    before numpy allocates what a header claims (issue 22, hostile sizes)."""
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                with z.open(info) as f:
                    shape, dtype = _npy_header(f, info.filename)
                    held = info.file_size - f.tell()
                n = int(np.prod(shape, dtype=object)) if shape else 1
                if n > MAX_NPZ_ELEMENTS or (dtype.itemsize and n * dtype.itemsize > held):
                    raise error(f"{path}: member {info.filename} declares shape {shape} of {dtype} "
                                f"({n * dtype.itemsize} bytes) but holds {held} bytes; allowed: a {what} as numpy "
                                f"writes it (at most {MAX_NPZ_ELEMENTS} elements a member)")
    except error:
        raise
    except Exception as e:  # noqa: BLE001 -- zipfile / numpy's header parser raise many types on bad bytes
        raise error(f"{path}: not a readable {what} (a zip of .npy arrays; truncated or corrupt?): "
                    f"{type(e).__name__}: {one_line(e)[:160]}") from None


__all__ = ["check_timesteps", "check_timestep", "check_pixels", "check_p", "PIXEL_MAX", "one_line",
           "check_npz_members", "MAX_NPZ_ELEMENTS"]
