"""Models from anywhere (issue 19): a model spec names the network a checkpoint rebuilds (docs/contract.md C8).

Spec forms (`--model SPEC`, `train_full_precision(dataset, SPEC)`):
  NAME                     the registry (`na_deploy.models`: digits_cnn, resnet18, ...);
  torchvision:NAME         a torchvision classification builder, weights=None, num_classes = the data's;
  package.module:builder   a callable importable from an installed module;
  path/to/file.py:builder  a callable defined in a Python file (its SHA-256 is recorded, C8).
A builder receives num_classes, in_channels and input_size when its signature accepts them (or **kwargs) and
must return an `nn.Module`. torchvision and user code are imported only when a spec names them.

`source_record(spec)` is what a checkpoint stores beside the spec ({"spec", "sha256"} of a builder file); a
rebuild whose builder file changed since is refused in one line (`check_source`). Every refusal is a one-line
`ModelError` naming the spec and what is allowed.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from torch import nn

from na_deploy.errors import ModelError

TORCHVISION = "torchvision"
# Builders whose auxiliary heads would change the training forward's output type: built without them.
_TORCHVISION_EXTRA = {"googlenet": {"aux_logits": False, "init_weights": True},
                      "inception_v3": {"aux_logits": False, "init_weights": True}}


@dataclass(frozen=True)
class ModelSource:
    """A parsed spec: kind "registry" | "torchvision" | "module" | "file", where (name, module or file), builder."""

    spec: str
    kind: str
    where: str
    builder: str = ""


def is_external(spec: str) -> bool:
    """A spec outside the registry (it has a ':')."""
    return ":" in str(spec)


def parse_spec(spec: str) -> ModelSource:
    """The spec's form; ModelError (one line) for a malformed one."""
    spec = str(spec)
    if not is_external(spec):
        return ModelSource(spec, "registry", spec)
    where, _, builder = spec.rpartition(":")
    allowed = "allowed: NAME, torchvision:NAME, package.module:builder, path/to/file.py:builder"
    if not where or not builder:
        raise ModelError(f"--model {spec}: malformed model spec; {allowed}")
    if where == TORCHVISION:
        return ModelSource(spec, "torchvision", builder)
    if where.endswith(".py"):
        return ModelSource(spec, "file", where, builder)
    if not all(part.isidentifier() for part in where.split(".")) or not builder.isidentifier():
        raise ModelError(f"--model {spec}: malformed model spec; {allowed}")
    return ModelSource(spec, "module", where, builder)


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def source_record(spec: str) -> Optional[dict]:
    """What a checkpoint records of an external spec: {"spec"} (+ "sha256" of a builder file); None for the
    registry (checkpoints of registry models keep their bytes)."""
    src = parse_spec(spec)
    if src.kind == "registry":
        return None
    record: dict[str, Any] = {"spec": src.spec}
    if src.kind == "file":
        _check_file(src)
        record["sha256"] = file_sha256(src.where)
    return record


def check_source(spec: str, record: Optional[dict], where: str) -> None:
    """Refuse (one line) a rebuild whose builder file is missing or changed since `record` was made (C8)."""
    if not record or "sha256" not in record:
        return
    src = parse_spec(spec)
    if not Path(src.where).is_file():
        raise ModelError(f"{where}: builder file {src.where} of model {spec!r} not found; the checkpoint needs the "
                         f"file it was trained with (sha256 {record['sha256'][:12]})")
    now = file_sha256(src.where)
    if now != record["sha256"]:
        raise ModelError(f"{where}: builder file {src.where} changed since the checkpoint was written (sha256 "
                         f"{now[:12]}, recorded {record['sha256'][:12]}); allowed: the same file")


def _check_file(src: ModelSource) -> None:
    if not Path(src.where).is_file():
        raise ModelError(f"--model {src.spec}: file {src.where} not found; allowed: path/to/file.py:builder")


def _torchvision_builder(src: ModelSource) -> Callable[..., nn.Module]:
    try:
        import torchvision.models as tvm
    except ImportError as e:
        raise ModelError(f"--model {src.spec}: torchvision is not installed (pip install torchvision)") from e
    names = tvm.list_models(module=tvm)
    if src.where not in names:
        raise ModelError(f"--model {src.spec}: torchvision has no classification builder {src.where!r}; e.g. "
                         f"{', '.join(n for n in names if n.startswith(('resnet', 'vgg')))[:120]}, ...")
    return tvm.get_model_builder(src.where)


def _import_module(src: ModelSource) -> Any:
    """The module of a module/file spec; whatever it raises on import becomes one line naming it."""
    try:
        if src.kind == "module":
            return importlib.import_module(src.where)
        _check_file(src)
        name = f"na_deploy_user_model_{hashlib.sha256(str(Path(src.where).resolve()).encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(name, src.where)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses / pickling inside the file look themselves up
        spec.loader.exec_module(module)
        return module
    except ModelError:
        raise
    except BaseException as e:  # a user's file may raise anything on import, SystemExit included
        if isinstance(e, KeyboardInterrupt):
            raise
        msg = (str(e).splitlines() or [""])[0]
        raise ModelError(f"--model {src.spec}: importing {src.where} failed ({type(e).__name__}: {msg})") from e


def builder_of(spec: str) -> Callable[..., nn.Module]:
    """The callable an external spec names; ModelError naming what is missing."""
    src = parse_spec(spec)
    if src.kind == "torchvision":
        return _torchvision_builder(src)
    module = _import_module(src)
    fn = getattr(module, src.builder, None)
    if not callable(fn):
        raise ModelError(f"--model {spec}: {src.where} has no callable {src.builder!r}; allowed: a function or "
                         f"class returning an nn.Module")
    return fn


def _accepted(fn: Callable, offered: dict) -> dict:
    """The keyword arguments of `offered` that `fn`'s signature takes (all of them with **kwargs)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(offered)
    return {k: v for k, v in offered.items() if k in params}


def build_external(spec: str, in_channels: int = 3, num_classes: int = 10, input_size: Optional[int] = None,
                   **kwargs: Any) -> nn.Module:
    """Build an external spec's module for the data (num_classes etc.); ModelError naming the spec otherwise."""
    src = parse_spec(spec)
    fn = builder_of(spec)
    if src.kind == "torchvision":
        if int(in_channels) != 3:
            raise ModelError(f"--model {spec}: torchvision builders take 3-channel images; the data has "
                             f"{in_channels}; allowed: RGB data or a builder of your own")
        offered = {"weights": None, "num_classes": int(num_classes), **_TORCHVISION_EXTRA.get(src.where, {}),
                   **kwargs}
    else:
        offered = {"num_classes": int(num_classes), "in_channels": int(in_channels), "input_size": input_size,
                   **kwargs}
    try:
        model = fn(**_accepted(fn, offered))
    except Exception as e:
        msg = (str(e).splitlines() or [""])[0]
        raise ModelError(f"--model {spec}: the builder raised {type(e).__name__}: {msg}") from e
    if not isinstance(model, nn.Module):
        raise ModelError(f"--model {spec}: the builder returned {type(model).__name__}, not an nn.Module")
    return model


def check_spec(spec: str) -> None:
    """Refuse an unknown registry name or an external spec whose builder cannot be found (nothing is built)."""
    src = parse_spec(spec)
    if src.kind != "registry":
        builder_of(spec)
