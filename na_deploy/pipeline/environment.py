"""What makes a run reproducible beyond its config (issue 20): report.json's "environment".

Training results depend on torch's intra-op thread count (the order of float reductions changes with it: the
digits ANN measured 98.89 % with 2 threads and 99.72 % with 1), on the device and on the package versions. The
thread count is set by `--threads N` (torch.set_num_threads) and otherwise is torch's default for the machine.
"""
from __future__ import annotations

import platform
from importlib import metadata
from typing import Optional


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def run_environment(device: Optional[str]) -> dict:
    """{"torch_threads", "device", "python", "torch", "numpy", "na_deploy"} of this process, now."""
    import numpy
    import torch

    from na_deploy.device import resolve_device

    return {"torch_threads": int(torch.get_num_threads()), "device": str(resolve_device(device)),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "na_deploy": _version("na-deploy")}


def set_threads(threads: Optional[int]) -> None:
    """torch.set_num_threads(threads) when given (`--threads`); None leaves torch's default."""
    if threads is None:
        return
    from na_deploy.errors import NaDeployError

    if threads < 1:
        raise NaDeployError(f"--threads {threads}: allowed: a positive integer")
    import torch

    torch.set_num_threads(int(threads))


__all__ = ["run_environment", "set_threads"]
