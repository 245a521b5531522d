"""Pretrained full-precision weights (`--weights FILE`, issue 19): read a state_dict file and load it strictly.

Accepted files: a `torch.save`d state_dict (torchvision's .pth, a plain .pt; also a dict holding it under
"state_dict" or "model", and DataParallel's "module." prefixes), or a .safetensors file when the safetensors
package is importable. Loading is strict: missing, unexpected and mis-shaped keys are refused in one line
naming the first few and the count. `reset_head=True` keeps the model's own (freshly initialised) final
classifier when only its class count differs from the file's (the one line returned says so).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from na_deploy.errors import ModelError
from na_deploy.training.checkpoint import build_registry_model
from na_deploy.training.model_spec import source_record

_SHOWN = 3


def weights_record(path: str) -> dict:
    """{"file": base name, "sha256"} of a weights file (provenance, docs/contract.md C8)."""
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return {"file": Path(path).name, "sha256": digest}


def _read(path: str) -> object:
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ModelError(f"--weights {path}: a .safetensors file needs the safetensors package "
                             "(pip install safetensors); allowed: a torch.save'd state_dict") from e
        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def load_weights_file(path: str) -> dict[str, torch.Tensor]:
    """The state_dict a weights file holds; ModelError (one line) when the file is missing or holds none."""
    if not Path(path).is_file():
        raise ModelError(f"--weights {path}: file not found")
    try:
        raw = _read(str(path))
    except ModelError:
        raise
    except Exception as e:
        msg = (str(e).splitlines() or [""])[0][:160]
        raise ModelError(f"--weights {path}: cannot read a state_dict ({type(e).__name__}: {msg}); allowed: "
                         "torch.save(model.state_dict()) or .safetensors") from e
    if isinstance(raw, dict):
        for key in ("state_dict", "model"):
            if isinstance(raw.get(key), dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ModelError(f"--weights {path}: holds no state_dict (a dict of tensors); allowed: "
                         "torch.save(model.state_dict())")
    if all(k.startswith("module.") for k in raw):
        raw = {k[len("module."):]: v for k, v in raw.items()}
    return dict(raw)


def _listed(keys: list[str]) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def final_classifier(model: nn.Module) -> Optional[str]:
    """The module path of the last Linear (or, failing that, Conv2d) registered in `model`: the head."""
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return (linear or convs or [None])[-1]


def _mismatch(own: dict, given: dict) -> tuple[list[str], list[str], list[str]]:
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    shapes = [k for k in own if k in given and tuple(own[k].shape) != tuple(given[k].shape)]
    return missing, unexpected, shapes


def apply_weights(model: nn.Module, state: dict, path: str, spec: str, reset_head: bool = False) -> Optional[str]:
    """Load `state` into `model` strictly (in place); returns the one-line note of a head reset, else None.

    ModelError naming the missing / unexpected / mis-shaped keys (first few + count). With `reset_head`, keys
    of the final classifier (`final_classifier`) whose shapes differ are left at the model's own init."""
    own = model.state_dict()
    missing, unexpected, shapes = _mismatch(own, state)
    note = None
    head = final_classifier(model)
    if reset_head and shapes and head and all(k.rpartition(".")[0] == head for k in shapes):
        was = tuple(state[shapes[0]].shape)[0]
        state = {k: v for k, v in state.items() if k not in shapes}
        state.update({k: own[k] for k in shapes})
        note = (f"--reset-head: final classifier '{head}' re-initialised ({was} -> "
                f"{tuple(own[shapes[0]].shape)[0]} classes); every other weight loaded from {Path(path).name}")
        shapes = []
    if missing or unexpected or shapes:
        parts = [f"missing {len(missing)} key(s): {_listed(missing)}" if missing else "",
                 f"unexpected {len(unexpected)}: {_listed(unexpected)}" if unexpected else "",
                 f"mis-shaped {len(shapes)}: " + _listed([f"{k} {tuple(state[k].shape)} vs model "
                                                           f"{tuple(own[k].shape)}" for k in shapes]) if shapes else ""]
        hint = "; --reset-head re-initialises a final classifier of another class count" if shapes else ""
        raise ModelError(f"--weights {path}: does not match model {spec!r} ({'; '.join(p for p in parts if p)})"
                         f"{hint}")
    model.load_state_dict(state, strict=True)
    return note


def build_with_weights(spec: str, model_kwargs: dict, weights: Optional[str] = None, reset_head: bool = False,
                       log: Optional[Callable[[str], None]] = None) -> tuple[nn.Module, Optional[dict]]:
    """(the model of `spec` built with `model_kwargs`, weights loaded from `weights` if given, the checkpoint's
    `model_source` record: spec + builder SHA-256 + weights file name and SHA-256, or None for a plain
    registry model). All refusals (bad spec, bad file, mismatched keys) come before anything is written."""
    record = source_record(spec)
    state = load_weights_file(weights) if weights is not None else None
    model = build_registry_model(spec, **model_kwargs)
    if state is not None:
        note = apply_weights(model, state, weights, spec, reset_head)
        if note and log is not None:
            log(note)
        record = {**(record or {"spec": spec}), "weights": weights_record(weights),
                  **({"reset_head": True} if note else {})}
    return model, record
