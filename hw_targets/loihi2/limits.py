"""Loihi 2 numeric limits (contract C5) and the design rules that check one quantity against one limit.

Every number below says where it comes from:
  [C5]    docs/contract.md clause C5;
  [LAVA]  docs/contract.md "Lava facts": lava-nc 0.10.0 source read and checked by runs
          (`proc/dense/models.py`, `utils/weightutils.py`, `proc/conv/models.py`, `proc/lif/models.py`);
  [DOC]   Loihi 2 / Lava documentation;
  [ASSUMPTION] our choice where no source pins the number (stated why).

A design rule is a small function `rule_*(node, ..., limits) -> list[Violation]` that checks one quantity and
names the limit (in the style of a hardware mapper's design-rule checks). `fit.check_fit` runs them all.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from na_deploy.protocols import Violation


def signed_range(bits: int) -> tuple[int, int]:
    """Two's-complement range of a `bits`-bit signed integer: [-2**(bits-1), 2**(bits-1) - 1]."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


@dataclass(frozen=True)
class Loihi2Limits:
    # Weight mantissa: 8-bit signed [C5][DOC: Loihi 2 synapses store up to 8-bit weights].
    weight_bits: int = 8
    # Conv weights are passed to Lava's Conv unchanged (no clip/truncate there) and must be 8-bit signed
    # [LAVA conv: "no weight clipping"; C5 8-bit mantissa].
    conv_weight_min: int = -128
    conv_weight_max: int = 127
    # Lava's Conv ignores weight_exp [LAVA], so conv2d and avgpool (a grouped Conv) synapses have exponent 0;
    # the exponent goes into the destination node's scale instead.
    conv_exponent: int = 0
    # Dense: Lava clips to 8 bits and, for mixed-sign matrices, truncates to even values in [-256, 254]
    # [LAVA weightutils.clip_weights/truncate_weights], so Dense mantissas must be even in [-256, 254]. An
    # all-non-positive matrix ("inhibitory" sign mode) is clipped to [-255, 0] instead, which would turn -256
    # into -255: fit.py forbids -256 there (`dense_inhibitory_min`) [LAVA, derived]. The quantizer uses the
    # symmetric [-254, 254] and never emits -256.
    dense_weight_min: int = -256
    dense_weight_max: int = 254
    dense_inhibitory_min: int = -254
    dense_weight_step: int = 2
    # Per-synapse-population weight exponent of a Dense, and of an identity (run as a diagonal Sparse): Lava's
    # Dense / Sparse shift the accumulated sum by weight_exp [LAVA dense / sparse models]; range [-8, 7] as
    # Loihi's 4-bit signed weight exponent [ASSUMPTION: Lava itself accepts any int; we keep the silicon's
    # historical range].
    dense_exponent_min: int = -8
    dense_exponent_max: int = 7
    # Scalar gains of avgpool (grouped Conv of gain * ones) and identity (diagonal Sparse) synapses: the conv
    # range, which Conv and every Lava sign mode of a one-signed diagonal leave unchanged [LAVA, derived].
    gain_min: int = -128
    gain_max: int = 127
    # Membrane, threshold, per-synapse accumulator and total input current: 24-bit signed
    # [C5; LAVA: LIF/Conv state wraps or saturates at 24 bits].
    state_bits: int = 24
    # Bias: 13-bit signed mantissa, 3-bit unsigned exponent, bias = mant << exp [LAVA LIF bit-accurate model;
    # DOC: Loihi 2 compartment bias].
    bias_mant_bits: int = 13
    bias_exp_min: int = 0
    bias_exp_max: int = 7
    # Graded input payload: raw 8-bit unsigned pixels 0..255 (C4) [C4; DOC: graded spikes carry up to 24 bits,
    # we send 8].
    graded_payload_max: int = 255
    # Graded spikes of a graded node (contract C2, "Graded nodes"): a signed payload of up to 24 bits [DOC: Loihi 2
    # graded spikes carry up to 24 bits; LAVA: Dense / Sparse / Conv with num_message_bits > 0 use the payload as sent].
    graded_spike_bits: int = 24
    # Binary spike payload of a neuron node [C2].
    spike_payload_max: int = 1
    # The number of time steps the static accumulator / membrane bound is proven for unless the caller
    # asks otherwise; stored per net in IntNet.meta["max_timesteps"] [ASSUMPTION: covers T = 1..256].
    max_timesteps: int = 256
    # Neuron models (na_deploy.ir.neuron) the static bound of fit.py covers and a Lava backend runs
    # [C2; LAVA]: "subtract" on our own process (backend "lava": Lava has no subtractive reset), "zero" on
    # Lava's stock bit-accurate LIF (backend "lava-lif"; du = 4095, dv = 0: a non-leaky IF, reset to 0);
    # "negative" (signed spikes: the bound takes |w| sums) and "accumulate" (the bound covers T steps without
    # resets) on our process (fit.py's bound covers them; the Lava process lists what it runs itself); "graded"
    # (a non-spiking graded node, contract C2: its payload is its current) on our process too.
    neuron_models: tuple[str, ...] = ("subtract", "zero", "negative", "accumulate", "graded")
    # Stock LIF registers of a "zero" node [LAVA PyLifModelBitAcc]: vth 17-bit unsigned (spike when
    # v > vth << 6); a_in (the per-step synaptic sum) 16-bit signed; v = 64 x ours (a_in << 6, vth << 6),
    # saturated at +-(2^23 - 1), so |v| <= (2^23 - 1) >> 6; bias_mant 13-bit signed << bias_exp (0..7),
    # not shifted by 6, so it must equal 64 x our bias (`lif_bias`). vth and a_in are the model's declared
    # precisions (Loihi's registers): Lava's Python model holds them in int32 and does not wrap at 17 / 16 bits
    # (checked: a_in = 34680 still runs exactly), so these two rules keep nets within the chip, not Lava.
    lif_vth_bits: int = 17
    lif_a_in_bits: int = 16
    lif_shift: int = 6
    # The LIF's bias_exp register holds 0..7, but lava-dl's netx always sets bias_exp = 6 [LAVA-DL netx/hdf5.py]:
    # we allow 6 only (64 x bias = bias << 6, |bias| <= 4095) so that one IntNet runs on both stock-LIF paths,
    # backend "lava-lif" and the netx export.
    lif_bias_exp_max: int = 6

    @property
    def graded_spike_range(self) -> tuple[int, int]:
        return signed_range(self.graded_spike_bits)

    @property
    def lif_vth_max(self) -> int:
        return (1 << self.lif_vth_bits) - 1

    @property
    def lif_a_in_range(self) -> tuple[int, int]:
        return signed_range(self.lif_a_in_bits)

    @property
    def lif_membrane_max(self) -> int:
        """Largest |v| of ours whose LIF value 64 v stays below the LIF's saturation 2^23 - 1."""
        return self.state_max >> self.lif_shift

    @property
    def state_min(self) -> int:
        return signed_range(self.state_bits)[0]

    @property
    def state_max(self) -> int:
        return signed_range(self.state_bits)[1]

    @property
    def bias_mant_min(self) -> int:
        return signed_range(self.bias_mant_bits)[0]

    @property
    def bias_mant_max(self) -> int:
        return signed_range(self.bias_mant_bits)[1]


LOIHI2 = Loihi2Limits()


def lif_bias(bias, limits: "Loihi2Limits" = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Our integer bias b (any shape) re-encoded for the stock LIF: (bias_mant, bias_exp, ok) with
    bias_mant << bias_exp == 64 * b where ok. 64 b = b << 6, so exp 6 works for b in the 13-bit mantissa
    range, exp 7 for even b with b / 2 in it (only if limits.lif_bias_exp_max allows 7: by default it is 6,
    netx's fixed choice); a smaller exp needs a larger mantissa. Elsewhere (ok False) there is no encoding
    (mant / exp are 0 there)."""
    limits = limits or LOIHI2
    b = np.asarray(bias, dtype=np.int64)
    lo, hi = limits.bias_mant_min, limits.bias_mant_max
    shift = limits.lif_shift
    fits6 = (b >= lo) & (b <= hi)
    fits7 = ~fits6 & (b % 2 == 0) & (b // 2 >= lo) & (b // 2 <= hi) & (shift + 1 <= limits.lif_bias_exp_max)
    mant = np.where(fits6, b, np.where(fits7, b // 2, 0))
    exp = np.where(fits6, shift, np.where(fits7, shift + 1, 0))
    return mant.astype(np.int64), exp.astype(np.int64), fits6 | fits7


# ------------------------------------------------------------------------------------- design rules
def rule_range(node: str, quantity: str, values, lo: int, hi: int, message: str = "") -> list[Violation]:
    """All `values` in [lo, hi]; reports the worst offender."""
    a = np.asarray(values)
    if a.size == 0:
        return []
    amin, amax = a.min(), a.max()
    if amin >= lo and amax <= hi:
        return []
    worst = amax if amax > hi else amin
    return [Violation(node, quantity, _py(worst), f"[{lo}, {hi}]", message)]


def rule_integer(node: str, quantity: str, values) -> list[Violation]:
    a = np.asarray(values)
    if np.issubdtype(a.dtype, np.integer):
        return []
    return [Violation(node, quantity, str(a.dtype), "integer dtype")]


def rule_step(node: str, quantity: str, values, step: int, message: str = "") -> list[Violation]:
    """All `values` multiples of `step` (Lava's Dense truncation leaves only those unchanged)."""
    a = np.asarray(values)
    bad = a[(a % step) != 0] if a.size else a
    if bad.size == 0:
        return []
    return [Violation(node, quantity, _py(bad.flat[0]), f"multiple of {step}", message)]


def rule_equal(node: str, quantity: str, value, want, message: str = "") -> list[Violation]:
    return [] if value == want else [Violation(node, quantity, _py(value), f"== {want}", message)]


def rule_member(node: str, quantity: str, value, allowed, message: str = "") -> list[Violation]:
    return [] if value in allowed else [Violation(node, quantity, value, f"one of {list(allowed)}", message)]


def _py(v):
    return v.item() if isinstance(v, np.generic) else v
