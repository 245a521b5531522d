"""Model surgery for quantization-aware training (issue 2, contract C1/C2).

`quantize_model(model, p, noise_adaptor)` returns a copy of `model` in which
* every ReLU -- `nn.ReLU` modules *and* functional calls (`F.relu`, `torch.relu`, `x.relu()`, in-place
  variants) -- becomes a `QuantReLU(p, s, noise_adaptor)` (q = s*round(clip(v/s + eps, 0, p)), C1);
* every max-pool becomes the average pool with the same kernel/stride/padding (an IF SNN cannot max-pool, C2);
  a 2-d one with ceil_mode=True gets divisor_override = kh*kw, so its partial windows are one exact conv too;
* ReLU6 / Hardtanh(0, a) (module or F.relu6 / F.hardtanh(x, 0, a)) and clamp(0, a) (torch.clamp / torch.clip /
  x.clamp / x.clip, in-place variants; clamp(min=0) is a plain ReLU) become a QuantReLU too (issue 19): its
  upper clip a is absorbed by the QuantReLU's own clip at p*s -- the step size is initialised with p*s <= a
  (`calibrate_step_sizes` searches thresholds up to a on activations clipped at a), so the clip at a never
  binds below p*s; QAT then learns s freely (the converted SNN is exact w.r.t. the QAT model either way);
* any other activation (GELU, Sigmoid, Tanh, SiLU, Hardswish, ELU, LeakyReLU, PReLU, ..., module or
  functional), a clamp with other bounds and attention / LayerNorm modules are refused with a `ModelError`
  naming the module path.

Functional calls are found with torch.fx: the model (with every replaced module a leaf) is traced
symbolically; each functional ReLU node becomes a `call_module` of a new QuantReLU registered under the
deterministic name `quant_relu_<k>` (k = order in the traced graph), so rebuilding the same architecture
always yields the same state_dict keys. If no functional ReLU exists, the original module structure is kept
(same class, same names). A model that torch.fx cannot trace is refused: its functional activations could
not be checked.

`calibrate_step_sizes(model, batch)` initialises each s from data (MSE-optimal search, see its docstring).
"""
from __future__ import annotations

import copy
import math
from typing import Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from na_deploy.checks import check_p
from na_deploy.errors import ModelError
from na_deploy.training.quantizer import QuantReLU
from na_deploy.rounding import round_half_up

# ----------------------------------------------------------------------------------- what is what
_FUNCTIONAL_RELU = {F.relu, torch.relu, torch.relu_, F.relu_}
_METHOD_RELU = {"relu", "relu_"}
_FUNCTIONAL_MAXPOOL = {F.max_pool1d: F.avg_pool1d, F.max_pool2d: F.avg_pool2d, F.max_pool3d: F.avg_pool3d}
_FUNCTIONAL_OTHER_ACT = {
    F.gelu, F.silu, F.mish, F.elu, F.selu, F.celu, F.leaky_relu, F.hardtanh, F.relu6, F.softplus,
    F.hardswish, F.hardsigmoid, F.logsigmoid, F.softsign, F.tanhshrink, F.prelu, F.rrelu, F.glu,
    F.sigmoid, F.tanh, F.threshold, torch.sigmoid, torch.tanh, torch.selu, torch.celu, torch.prelu,
    torch.rrelu, torch.threshold, F.elu_, F.leaky_relu_, F.hardtanh_,
}
_METHOD_OTHER_ACT = {"sigmoid", "sigmoid_", "tanh", "tanh_"}
_CLAMP_FUNCS = {torch.clamp, torch.clip, torch.clamp_, torch.clip_}
_CLAMP_METHODS = {"clamp", "clip", "clamp_", "clip_"}
_MAXPOOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                    nn.AdaptiveMaxPool3d)
_ACTIVATION_MODULE = "torch.nn.modules.activation"


def clipped_relu_bound(m: nn.Module) -> float | None:
    """a of a ReLU6 / Hardtanh(0, a) module (a > 0): a clipped ReLU the QuantReLU replaces; None otherwise."""
    if isinstance(m, nn.Hardtanh) and float(m.min_val) == 0.0 and float(m.max_val) > 0:
        return float(m.max_val)
    return None


_UNSUPPORTED_MODULES = (nn.MultiheadAttention, nn.LayerNorm, nn.GroupNorm, nn.TransformerEncoderLayer,
                        nn.TransformerDecoderLayer, nn.Upsample)


def is_other_activation(m: nn.Module) -> bool:
    """Any torch.nn activation module that is not a ReLU or a clipped ReLU (ReLU6, Hardtanh(0, a))."""
    if isinstance(m, (nn.ReLU, QuantReLU)) or clipped_relu_bound(m) is not None:
        return False
    return type(m).__module__ == _ACTIVATION_MODULE or isinstance(
        m, (nn.GELU, nn.Sigmoid, nn.Tanh, nn.SiLU, nn.ELU, nn.LeakyReLU, nn.Hardtanh, nn.Mish))


def avgpool_for(m: nn.Module, path: str) -> nn.Module:
    """The average pool with the same window as max-pool `m` (zero padding counted, as the SNN sees it)."""
    if isinstance(m, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
        if m.return_indices:
            raise ModelError(f"{path}: {type(m).__name__} with return_indices=True cannot become an average pool")
        cls = {nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
               nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d}[type(m)]
        return cls(m.output_size)
    dil = m.dilation if isinstance(m.dilation, tuple) else (m.dilation,)
    if any(d != 1 for d in dil) or m.return_indices:
        raise ModelError(f"{path}: {type(m).__name__} with dilation {m.dilation} / return_indices="
                         f"{m.return_indices} has no average-pool equivalent; allowed: dilation 1, no indices")
    cls = {nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool3d: nn.AvgPool3d}[type(m)]
    if m.ceil_mode and cls is nn.AvgPool2d:  # partial windows divided by k*k too: one exact conv (C2)
        return cls(m.kernel_size, m.stride, m.padding, ceil_mode=True, divisor_override=_window(m.kernel_size))
    return cls(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode)


def _window(kernel) -> int:
    """kh * kw of a 2-d pool's kernel size (an int or a pair)."""
    k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    return int(k[0]) * int(k[1])


def _set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, leaf, new)


def _device_of(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def replace_modules(model: nn.Module, p: int, noise_adaptor: bool, step_size: float) -> None:
    """In place: nn.ReLU -> QuantReLU, max-pool -> avg-pool; other activations -> ModelError (path named).

    A module registered under several paths is replaced by one new module at all of them (call sites that
    share it are split later, in `replace_functional`)."""
    device = _device_of(model)
    new_for: dict[int, nn.Module] = {}
    for path, m in list(model.named_modules(remove_duplicate=False)):
        if not path:
            if is_other_activation(m) or isinstance(m, (nn.ReLU,) + _MAXPOOL_MODULES):
                raise ModelError(f"model: the model itself is a bare {type(m).__name__}; wrap it in a network")
            continue
        if isinstance(m, nn.ReLU) or clipped_relu_bound(m) is not None:
            new = new_for.setdefault(id(m), _quant_relu(p, step_size, noise_adaptor, device, clipped_relu_bound(m)))
        elif isinstance(m, _UNSUPPORTED_MODULES):
            raise ModelError(f"{path}: {type(m).__name__} is not supported: it is not an exact linear map between "
                             "quantized ReLUs (docs/contract.md C2); allowed: conv, linear, BN, avg/max pool, ReLU")
        elif isinstance(m, _MAXPOOL_MODULES):
            new = new_for.setdefault(id(m), avgpool_for(m, path))
        elif is_other_activation(m):
            raise ModelError(f"{path}: activation {type(m).__name__} is not supported; only ReLU (becomes "
                             f"the quantized activation) is allowed")
        else:
            continue
        _set_submodule(model, path, new)


def _quant_relu(p: int, step_size: float, noise_adaptor: bool, device, upper: float | None) -> QuantReLU:
    """A QuantReLU; `upper` (a of a ReLU6 / Hardtanh(0, a)) bounds its step size's calibration (p*s <= a)."""
    q = QuantReLU(p, step_size, noise_adaptor).to(device)
    q.upper = upper
    return q


class _LeafTracer(fx.Tracer):
    """torch.fx tracer that keeps QuantReLU (an autograd.Function inside) as a leaf."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QuantReLU) or super().is_leaf_module(m, qualname)


def _node_owner(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    owner = next(reversed(stack.values()))[0] if stack else ""
    return f"{owner or '<model>'}.forward (fx node {node.name!r})"


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolic trace with QuantReLU as a leaf; ModelError when the forward is not traceable."""
    try:
        tracer = _LeafTracer()
        graph = tracer.trace(model)
    except Exception as e:  # fx raises many types (TraceError, TypeError, NotImplementedError...)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"model {type(model).__name__}: torch.fx cannot trace its forward ({msg}); functional "
                         f"activations cannot be checked; use a traceable forward with nn.ReLU modules") from e
    return fx.GraphModule(model, graph, class_name=type(model).__name__)


def _is_relu_node(n: fx.Node) -> bool:
    return (n.op == "call_function" and n.target in _FUNCTIONAL_RELU) or (
        n.op == "call_method" and n.target in _METHOD_RELU) or _functional_bound(n) is not None or (
        _clamp_bounds(n) is not None and _clamp_relu_upper(n) is not False)


def _clamp_bounds(n: fx.Node) -> tuple | None:
    """(min, max) of a clamp / clip node (torch.clamp(x, lo, hi), x.clamp(lo, hi), clip, in place); None for
    any other node."""
    if not ((n.op == "call_function" and n.target in _CLAMP_FUNCS) or (
            n.op == "call_method" and n.target in _CLAMP_METHODS)):
        return None
    a = dict(zip(["input", "min", "max"], n.args), **n.kwargs)
    return a.get("min"), a.get("max")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _clamp_relu_upper(n: fx.Node) -> float | None | bool:
    """a of clamp(0, a) (a > 0), None for clamp(min=0) (a plain ReLU), False for any other bounds."""
    lo, hi = _clamp_bounds(n) or (None, None)
    if not (_number(lo) and lo == 0):
        return False
    return None if hi is None else float(hi) if _number(hi) and hi > 0 else False


def _functional_bound(n: fx.Node) -> float | None:
    """a of F.relu6(x) (6) / F.hardtanh(x, 0, a) / clamp(x, 0, a); None for any other node."""
    if _clamp_bounds(n) is not None:
        upper = _clamp_relu_upper(n)
        return None if upper is False else upper
    if n.op == "call_function" and n.target is F.relu6:
        return 6.0
    if n.op == "call_function" and n.target in (F.hardtanh, F.hardtanh_):
        a = dict(zip(["input", "min_val", "max_val"], n.args), **n.kwargs)
        lo, hi = a.get("min_val", -1.0), a.get("max_val", 1.0)
        return float(hi) if isinstance(lo, (int, float)) and lo == 0 and isinstance(hi, (int, float)) and hi > 0 \
            else None
    return None


def _is_other_act_node(n: fx.Node) -> bool:
    return (n.op == "call_function" and n.target in _FUNCTIONAL_OTHER_ACT) or (
        n.op == "call_method" and n.target in _METHOD_OTHER_ACT)


def _avg_pool_args(n: fx.Node) -> tuple[tuple, dict]:
    """F.max_pool*d(x, kernel, stride, padding, dilation, ceil_mode, return_indices) -> avg_pool args."""
    names = ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"]
    bound = dict(zip(names, n.args))
    bound.update(n.kwargs)
    dil = bound.get("dilation", 1)
    dil = dil if isinstance(dil, (tuple, list)) else (dil,)
    if any(d != 1 for d in dil) or bound.get("return_indices", False):
        raise ModelError(f"{_node_owner(n)}: functional max-pool with dilation/return_indices has no "
                         f"average-pool equivalent; allowed: dilation 1, no indices")
    args = (bound["input"], bound["kernel_size"])
    kwargs = {k: bound[k] for k in ("stride", "padding", "ceil_mode") if k in bound}
    if kwargs.get("ceil_mode") and n.target in (F.max_pool2d, torch.max_pool2d):  # as `avgpool_for`
        kwargs["divisor_override"] = _window(bound["kernel_size"])
    return args, kwargs


def split_shared_quant_relus(gm: fx.GraphModule) -> bool:
    """A QuantReLU called at several places gets one module per call site (each layer learns its own s,
    and becomes its own neuron population): the first call keeps the module, call k >= 1 gets a copy
    registered as `<path>_site<k>`. Returns whether anything changed."""
    seen: dict[str, int] = {}
    changed = False
    for n in list(gm.graph.nodes):
        if n.op != "call_module" or not isinstance(gm.get_submodule(n.target), QuantReLU):
            continue
        k = seen.get(n.target, 0)
        seen[n.target] = k + 1
        if k:
            name = f"{n.target}_site{k}"
            gm.add_submodule(name, copy.deepcopy(gm.get_submodule(n.target)))
            n.target = name
            changed = True
    return changed


def replace_functional(model: nn.Module, p: int, noise_adaptor: bool, step_size: float) -> nn.Module:
    """Rewrite functional ReLU / max-pool calls found by torch.fx; refuse other functional activations.

    Returns `model` unchanged when there is nothing functional to replace, else a GraphModule.
    """
    gm = trace(model)
    changed = split_shared_quant_relus(gm)
    device = _device_of(model)
    k = 0
    for n in list(gm.graph.nodes):
        if _is_other_act_node(n) and not _is_relu_node(n):
            name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
            raise ModelError(f"{_node_owner(n)}: activation {name} is not supported; only ReLU is allowed")
        if _clamp_bounds(n) is not None and not _is_relu_node(n):
            lo, hi = _clamp_bounds(n)
            raise ModelError(f"{_node_owner(n)}: clamp(min={lo}, max={hi}) is not supported; allowed: clamp(0, a) "
                             "with a > 0 or clamp(min=0) (a quantized ReLU)")
        if _is_relu_node(n):
            while hasattr(gm, f"quant_relu_{k}"):
                k += 1
            name = f"quant_relu_{k}"
            gm.add_submodule(name, _quant_relu(p, step_size, noise_adaptor, device, _functional_bound(n)))
            with gm.graph.inserting_after(n):
                new = gm.graph.call_module(name, (n.args[0] if n.args else n.kwargs["input"],))
            n.replace_all_uses_with(new)
            gm.graph.erase_node(n)
            changed = True
            k += 1
        elif n.op == "call_function" and n.target in _FUNCTIONAL_MAXPOOL:
            args, kwargs = _avg_pool_args(n)
            with gm.graph.inserting_after(n):
                new = gm.graph.call_function(_FUNCTIONAL_MAXPOOL[n.target], args, kwargs)
            n.replace_all_uses_with(new)
            gm.graph.erase_node(n)
            changed = True
    if not changed:
        return model
    gm.graph.lint()
    gm.recompile()
    return gm


def quantize_model(model: nn.Module, p: int, noise_adaptor: bool = True, step_size: float = 1.0) -> nn.Module:
    """A copy of `model` with every ReLU -> QuantReLU(p, step_size, noise_adaptor) and max-pool -> avg-pool.

    Deterministic: the same architecture always yields the same module names / state_dict keys. Raises
    ModelError for p < 1, a non-ReLU activation (module path named) or an untraceable forward.
    """
    p = check_p(p)
    if not step_size > 0 or not math.isfinite(step_size):
        raise ModelError(f"step_size: must be a finite positive number (s), got {step_size!r}")
    qmodel = copy.deepcopy(model)
    replace_modules(qmodel, p, noise_adaptor, step_size)
    return replace_functional(qmodel, p, noise_adaptor, step_size)


def quant_layers(model: nn.Module) -> list[tuple[str, QuantReLU]]:
    """Every QuantReLU of `model` with its module path, in module registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, QuantReLU)]


# ----------------------------------------------------------------------------------- calibration
def quantization_mse(v: torch.Tensor, s: torch.Tensor, p: int) -> torch.Tensor:
    """mean((s*round(clip(v/s, 0, p)) - relu(v))^2) for each candidate step in `s` (1-D); eps = 0."""
    q = s[:, None] * round_half_up(torch.clamp(v[None, :] / s[:, None], 0, p))
    return ((q - torch.relu(v)[None, :]) ** 2).mean(dim=1)


def mse_optimal_step(v: torch.Tensor, p: int, grid: int = 200, max_samples: int = 200_000,
                     generator: Optional[torch.Generator] = None) -> float:
    """The step s minimising quantization MSE of the full-precision activation sample `v`.

    Candidates: th = p*s on a linear grid th_i = (i/grid) * max(relu(v)), i = 1..grid (covers everything
    from heavy clipping to no clipping); s* = argmin_i mean((s_i*round(clip(v/s_i,0,p)) - relu(v))^2).
    Up to `max_samples` elements are used (a seeded random subset beyond that). All-zero input -> s = 1.
    """
    v = v.detach().reshape(-1).double().cpu()
    if v.numel() > max_samples:
        idx = torch.randperm(v.numel(), generator=generator)[:max_samples]
        v = v[idx]
    vmax = float(torch.relu(v).max()) if v.numel() else 0.0
    if not vmax > 0 or not math.isfinite(vmax):
        return 1.0
    th = torch.arange(1, grid + 1, dtype=torch.float64) / grid * vmax
    s = th / p
    errs = torch.cat([quantization_mse(v, chunk, p) for chunk in s.split(16)])
    return float(s[int(torch.argmin(errs))])


@torch.no_grad()
def collect_fp_activations(model: nn.Module, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """Inputs v of every QuantReLU while the network runs in full precision (each QuantReLU temporarily
    outputs relu(v), so later layers see the activations the full-precision network produces)."""
    acts: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(module, inputs, output):
            acts[name] = inputs[0].detach()
            upper = getattr(module, "upper", None)
            return torch.relu(inputs[0]) if upper is None else torch.clamp(inputs[0], 0, upper)
        return hook

    for name, m in quant_layers(model):
        handles.append(m.register_forward_hook(make_hook(name)))
    was_training = model.training
    try:
        model.eval()
        model(batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return acts


@torch.no_grad()
def calibrate_step_sizes(model: nn.Module, batch: torch.Tensor, grid: int = 200, seed: int = 0) -> dict[str, float]:
    """Data-driven init of every step size s (in place); returns {layer path: s}.

    Method: run the network once in eval mode on the calibration `batch` (already normalised) with every
    QuantReLU passing relu(v) through (full-precision activations), then for each layer pick the s that
    minimises the quantization MSE of its activations over a grid of clipping thresholds
    (`mse_optimal_step`). A badly initialised s collapses accuracy before QAT starts.
    """
    gen = torch.Generator().manual_seed(seed)
    acts = collect_fp_activations(model, batch)
    chosen = {}
    for name, m in quant_layers(model):
        if name not in acts:
            raise ModelError(f"{name}: quantized activation never ran on the calibration batch")
        upper = getattr(m, "upper", None)
        v = acts[name] if upper is None else acts[name].clamp(max=upper)  # p*s <= a: the clip at a never binds
        s = mse_optimal_step(v, m.p, grid=grid, generator=gen)
        m.step_size.data.fill_(s)
        chosen[name] = s
    return chosen
