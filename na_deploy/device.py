"""Which torch device to run on: CUDA when present, else CPU, or what the user named (`--device`)."""
from __future__ import annotations

from typing import Optional

import torch

from na_deploy.errors import ModelError


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: Optional[str | torch.device]) -> torch.device:
    """None or "auto" -> default_device(); otherwise the named device, refused when it cannot be used here."""
    if device is None or device == "auto":
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ModelError(f"device: {device!r} is not a torch device; allowed: auto, cpu, cuda, cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device: {device!r} requested but CUDA is not available; allowed here: cpu, auto")
    return dev
