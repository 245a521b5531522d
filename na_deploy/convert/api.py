"""Public entry points: `to_floatnet` (torch model -> FloatNet), `check_against_torch` (the self-check) and
`convert_checkpoint` (a QAT checkpoint file -> FloatNet with its provenance: meta `made_from` = the checkpoint's
base name and SHA-256, C8). The FloatNet's meta holds no path and no wall time, so the same checkpoint gives the
same bytes wherever it is converted."""
from __future__ import annotations

import copy
import os
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from na_deploy import __version__
from na_deploy.convert.delays import balance_delays
from na_deploy.errors import ConversionError, NaDeployError
from na_deploy.ir import FloatNet, InputNode
from na_deploy.io.made_from import made_from
from na_deploy.training.quantizer import QuantReLU
from na_deploy.convert.affine import Shape
from na_deploy.convert.fx_walk import _MAXPOOL_MODULES, _Converter, trace_model
from na_deploy.convert.bias_shift import apply_bias_shift
from na_deploy.ir.offset_calibration import check_offset_steps, with_offset_steps
from na_deploy.convert.neuron_modes import DEFAULT_ZERO, ZeroParams, apply_neuron_mode, check_mode, refuse_graded


def _check_channel_scale(channel_scale: Any, input_shape: Shape) -> np.ndarray:
    """One finite positive float64 scale per input channel (a scalar is broadcast; None = ones)."""
    scale = np.asarray(channel_scale if channel_scale is not None else np.ones(input_shape[0]),
                       dtype=np.float64).reshape(-1)
    if scale.size == 1 and input_shape[0] > 1:
        scale = np.full(input_shape[0], float(scale[0]))
    if scale.size != input_shape[0] or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ConversionError(f"channel_scale must hold {input_shape[0]} finite positive values (one per input "
                              f"channel), got {scale.tolist()}")
    return scale


def _check_convertible(model: nn.Module, input_shape: Shape, name: Optional[str]) -> None:
    """Refuse a bad input shape, a model without QuantReLU and any MaxPool module, before tracing."""
    if not input_shape or min(input_shape) < 1:
        raise ConversionError(f"input_shape must be positive (C, H, W), got {input_shape}")
    quants = [m for m in model.modules() if isinstance(m, QuantReLU)]
    if not quants:
        raise ConversionError(f"model {name or type(model).__name__} is not a QAT model (no QuantReLU); quantize it "
                              "first (na_deploy.training.surgery.quantize_model / `na-deploy quantize`)")
    for path, m in model.named_modules():
        if isinstance(m, _MAXPOOL_MODULES):
            raise ConversionError(f"module '{path}': {type(m).__name__} (MaxPool) has no spiking equivalent; "
                                  "convert to AvgPool first (quantize_model does this)")


def _walk(model: nn.Module, input_shape: Shape, scale: np.ndarray, name: Optional[str]) -> _Converter:
    """Trace the (eval-mode) model, propagate shapes on a batch of 2 zero images, and convert it."""
    gm = trace_model(model)
    p0 = next(model.parameters(), None)
    example = torch.zeros((2,) + input_shape, dtype=p0.dtype if p0 is not None else torch.float32,
                          device=p0.device if p0 is not None else "cpu")
    with torch.no_grad():
        try:
            ShapeProp(gm).propagate(example)
        except NaDeployError:
            raise
        except Exception as e:
            cause = e.__cause__ or e  # ShapeProp wraps the model's own error
            msg = (str(cause).splitlines() or [type(cause).__name__])[0]
            raise ConversionError(f"model {name or type(model).__name__} does not run on input shape "
                                  f"{input_shape}: {msg}") from e
        conv = _Converter(gm, input_shape, scale)
        conv.run()
    return conv


def to_floatnet(model: nn.Module, input_shape: Sequence[int], channel_scale: Any = None, *,
                name: Optional[str] = None, made_from_record: Optional[dict] = None, self_check: bool = True,
                seed: int = 0, neuron: str = "subtract", neuron_params: ZeroParams = DEFAULT_ZERO,
                bias_shift_timesteps: Optional[int] = None, offset_steps: int = 0) -> FloatNet:
    """Convert an eval-mode QAT torch model to a delay-balanced FloatNet (C2-C4, C7; rules in the package doc).

    input_shape: (C, H, W) of one image; channel_scale: per-channel normalisation x_norm = x_uint8 * scale_c,
    folded into the first layer so the FloatNet consumes raw uint8 pixels. `self_check` runs the FloatNet as a
    quantized ANN against the torch model (float64, 2 random images, seeded) and raises ConversionError when
    the logits differ (a misread op can never pass silently). `made_from_record`: the record of the file
    the model came from (`provenance_records.made_from`), stored as meta["made_from"] (C8). `neuron`: the neuron
    mode ("subtract", the paper's conversion, or "zero", reset to zero with `neuron_params`; see
    `convert.neuron_modes`), applied after the self-check (which checks the subtract conversion).
    `bias_shift_timesteps` = T: Datta et al.'s bias shift for T steps instead of the pre-charge (`bias_shift`).
    `offset_steps` = rho > 0: two-stage offset calibration (`na_deploy.ir.offset_calibration`; mode subtract only).
    """
    check_mode(neuron)
    _check_offset(neuron, offset_steps)
    input_shape = tuple(int(d) for d in input_shape)
    _check_convertible(model, input_shape, name)
    scale = _check_channel_scale(channel_scale, input_shape)
    was_training = model.training
    model.eval()
    try:
        conv = _walk(model, input_shape, scale, name)
    finally:
        model.train(was_training)
    ps = sorted(set(conv.p_by_node.values()))
    meta = {
        "model": name or type(model).__name__,
        "p": ps[0] if len(ps) == 1 else None, "p_by_node": dict(conv.p_by_node),
        "noise_adaptor": next(iter(conv.noise_flags)) if len(conv.noise_flags) == 1 else None,
        "input_form": "uint8 pixels; channel scale folded into the first layer (C4)",
        "na_deploy_version": __version__,
    }
    if made_from_record is not None:
        meta["made_from"] = dict(made_from_record)
    net = FloatNet(InputNode(input_shape, scale), conv.nodes, conv.readout, meta)
    net = balance_delays(net)
    if self_check:
        check_against_torch(net, model, seed=seed)
    net = apply_neuron_mode(net, neuron, neuron_params)
    net = net if bias_shift_timesteps is None else apply_bias_shift(net, bias_shift_timesteps)
    if offset_steps:
        refuse_graded(net, f"offset_steps {offset_steps}")
    return with_offset_steps(net, offset_steps) if offset_steps else net


def _check_offset(neuron: str, offset_steps: int) -> None:
    """offset_steps an int >= 0, and > 0 only with mode subtract (one line naming the option)."""
    rho = check_offset_steps(offset_steps)
    if rho and neuron != "subtract":
        raise ConversionError(f"offset_steps {rho}: offset calibration needs neuron mode subtract, got {neuron}; "
                              "allowed: offset_steps 0 for that mode")


def check_against_torch(net: FloatNet, model: nn.Module, n_images: int = 2, seed: int = 0,
                        rtol: float = 1e-6) -> float:
    """Run the FloatNet as a quantized ANN and a float64 copy of the torch model on `n_images` seeded random
    uint8 images; ConversionError if the logits differ by more than rtol * max|logit| (returns that error).

    Both sides evaluate in float64, so a quantization level can only flip on a tie closer than ~1e-12."""
    from na_deploy.simulate.ann import ann_forward

    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_images,) + tuple(net.input.shape), generator=gen, dtype=torch.int64)
    ref_model = copy.deepcopy(model).double().cpu().eval()
    scale = torch.as_tensor(net.input.channel_scale, dtype=torch.float64).view(1, -1, *([1] * (x.dim() - 2)))
    with torch.no_grad():
        ref = ref_model(x.double() * scale)
    got, _ = ann_forward(net, x, device="cpu", dtype=torch.float64, keep_levels=False)
    err = float((got - ref).abs().max())
    tol = rtol * max(1.0, float(ref.abs().max()))
    if not err <= tol:
        raise ConversionError(f"self-check: the FloatNet's ANN logits differ from the torch model's by {err:.3g} "
                              f"(> {tol:.3g}); an op was misread during conversion")
    return err


def convert_checkpoint(ckpt: Any, self_check: bool = True, neuron: str = "subtract",
                       neuron_params: ZeroParams = DEFAULT_ZERO, bias_shift_timesteps: Optional[int] = None,
                       offset_steps: int = 0) -> FloatNet:
    """FloatNet of a QAT checkpoint (`na_deploy.training.checkpoint.Checkpoint` or a path to one); meta["made_from"]
    records the checkpoint file (base name + SHA-256) when it was loaded from one. `neuron`, `offset_steps`: as
    `to_floatnet`."""
    check_mode(neuron)
    _check_offset(neuron, offset_steps)
    from na_deploy.training.checkpoint import load_checkpoint

    if isinstance(ckpt, (str, os.PathLike)):
        ckpt = load_checkpoint(ckpt)
    where = ckpt.path or "checkpoint"
    record = made_from("checkpoint", ckpt.path) if ckpt.path else None
    if ckpt.kind != "qat":
        raise ConversionError(f"{where}: not a QAT model (checkpoint kind {ckpt.kind!r}); quantize it first "
                              "(`na-deploy quantize`)")
    model = ckpt.build_model()
    net = to_floatnet(model, ckpt.input_shape, ckpt.normalization.channel_scale, name=ckpt.model_name,
                      made_from_record=record, self_check=self_check, neuron=neuron, neuron_params=neuron_params,
                      bias_shift_timesteps=bias_shift_timesteps, offset_steps=offset_steps)
    net.meta.update({"data_name": ckpt.data_name, "data_fingerprint": ckpt.data_fingerprint,
                     "checkpoint_epoch": int(ckpt.epoch)})
    if ckpt.p is not None:
        net.meta["p"] = int(ckpt.p)
    if ckpt.noise_adaptor is not None:
        net.meta["noise_adaptor"] = bool(ckpt.noise_adaptor)
    return net
