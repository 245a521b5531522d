"""Datta et al.'s fine-grained L1 activation regularizer for QAT (arXiv 2312.06900; `quantize --l1-sparsity λ`).

    loss = cross_entropy + λ · R,   R = (1 / (B · N)) · Σ_layers Σ_neurons n,   n = a / s ∈ {0, 1, ..., p}

a is a QuantReLU's output and s its step size, so n is the neuron's quantized level: its spike count per p steps
in the converted SNN (C2). R is therefore the mean number of spikes per neuron per p steps over the batch (B
images, N quantized neurons in all layers), and λ trades it against the task loss whatever the network's size.
The gradient reaches the pre-activation through the quantizer's own straight-through gradient (zero where the
activation is clipped at 0 or p) and s through its LSQ gradient, with s itself held fixed in the division
(`s.detach()`): the "bit-level" activation whose L1 norm is penalised is n, one gradient path per neuron.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from na_deploy.errors import NaDeployError
from na_deploy.training.quantizer import QuantReLU


def check_l1(value: float) -> float:
    """λ as a float; NaDeployError (one line) unless it is finite and >= 0."""
    lam = float(value)
    if not math.isfinite(lam) or lam < 0:
        raise NaDeployError(f"--l1-sparsity {value}: allowed: a finite number >= 0 (0 switches it off)")
    return lam


class ActivationL1:
    """Collects every QuantReLU's level n = a / s during a forward (forward hooks) and gives R (module doc).

        with ActivationL1(model) as reg:
            logits = model(x)
            loss = F.cross_entropy(logits, y) + lam * reg.penalty()
    """

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, QuantReLU)]
        if not self.layers:
            raise NaDeployError("--l1-sparsity needs a quantized model (QuantReLU layers); this model has none")
        self._levels: list[torch.Tensor] = []
        self._handles: list = []

    def _hook(self, module: QuantReLU, _inputs, output: torch.Tensor) -> None:
        self._levels.append(output / module.step_size.detach().abs().clamp_min(1e-8))

    def __enter__(self) -> "ActivationL1":
        self._handles = [m.register_forward_hook(self._hook) for m in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles, self._levels = [], []

    def penalty(self) -> torch.Tensor:
        """R of the forwards since the last call (then forgotten): total level / (batch x neurons)."""
        if not self._levels:
            raise NaDeployError("ActivationL1.penalty: no forward pass was recorded")
        batch = self._levels[0].shape[0]
        neurons = sum(t[0].numel() for t in self._levels)
        total = sum(t.sum() for t in self._levels)
        self._levels = []
        return total / (batch * neurons)


__all__ = ["ActivationL1", "check_l1"]
