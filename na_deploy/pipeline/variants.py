"""The variants of `na-deploy pipeline --compare` (issue: "tables like the paper's"), as small frozen specs.

A variant name is a base and modifiers joined by "+", e.g. `na`, `no-na`, `na+negative`, `na+offset`, `datta`,
`datta+l1`. It says two things, kept apart so that variants that differ only at inference share one QAT run:

* the training (`Training`): noise adaptor on or off, and the L1 activation penalty lambda (Datta et al.);
* the inference (`Inference`): the neuron mode (`subtract`, `negative`, `accumulate`, `zero`), the two-stage offset
  calibration steps rho (COS), and Datta's BN-bias shift (a net per T: the shift is v0 / T per step).

Bases:
    na      noise adaptor, subtract mode (the paper's method)
    no-na   no noise adaptor, subtract mode (plain quantized-ANN conversion, the paper's baseline)
    datta   no noise adaptor; Datta et al.: BN-bias shift + the accumulate-then-fire neuron
Modifiers:
    negative    QFFS-style negative spikes (neuron mode `negative`)
    accumulate  the accumulate-then-fire neuron (mode `accumulate`)
    zero        Lava's stock LIF rule (mode `zero`)
    offset      two-stage offset calibration with rho = --compare-offset-steps (COS, lightweight)
    l1          the L1 activation penalty lambda = --compare-l1 during QAT (Datta et al.)
    shift       Datta's BN-bias shift in place of the pre-charge
    noise=W     the noise adaptor's eps ~ U(-W/2, W/2) during QAT (`--noise-range`; W finite, > 0; base na only),
                e.g. `na,na+noise=0.5,na+noise=2`: paired arms of one noise range each
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from na_deploy.errors import NaDeployError

BASES = ("na", "no-na", "datta")
MODIFIERS = ("negative", "accumulate", "zero", "offset", "l1", "shift")
MODES = ("negative", "accumulate", "zero")
NOISE_PREFIX = "noise="  # the one modifier with a value: noise=W
DEFAULT_VARIANTS = ("na", "no-na", "na+negative", "na+offset", "datta", "datta+l1")


@dataclass(frozen=True)
class Training:
    """One QAT run: every variant with the same Training shares its checkpoint."""

    noise_adaptor: bool
    l1: float = 0.0
    noise_range: float = 1.0  # W of eps ~ U(-W/2, W/2) (the paper's 1)

    @property
    def tag(self) -> str:
        """File-name tag of its checkpoint, e.g. `na`, `no-na_l1-0.5`, `na_noise-0.5`."""
        return (("na" if self.noise_adaptor else "no-na") + (f"_l1-{self.l1:g}" if self.l1 else "")
                + (f"_noise-{self.noise_range:g}" if self.noise_range != 1.0 else ""))


@dataclass(frozen=True)
class Inference:
    """How one checkpoint is converted and run."""

    neuron: str = "subtract"
    offset_steps: int = 0
    bias_shift: bool = False


@dataclass(frozen=True)
class Variant:
    name: str
    training: Training
    inference: Inference


def _fail(name: str, why: str) -> NaDeployError:
    return NaDeployError(f"--compare {name!r}: {why}; a variant is a base ({', '.join(BASES)}) with modifiers "
                         f"joined by '+' ({', '.join(MODIFIERS)}, {NOISE_PREFIX}W), e.g. {','.join(DEFAULT_VARIANTS)}")


def _noise_range(name: str, base: str, mods: list[str]) -> float:
    """W of the variant's `noise=W` modifier (1.0 without one); refused unless W is finite and > 0 and the
    base trains with the noise adaptor."""
    values = [m[len(NOISE_PREFIX):] for m in mods if m.startswith(NOISE_PREFIX)]
    if not values:
        return 1.0
    if base != "na":
        raise _fail(name, f"{NOISE_PREFIX}W needs the noise adaptor (base na), not {base!r}")
    try:
        w = float(values[0])
    except ValueError:
        w = float("nan")
    if not (math.isfinite(w) and w > 0):
        raise _fail(name, f"{NOISE_PREFIX}{values[0]}: W must be a finite number > 0")
    return w


def parse_variant(name: str, l1: float, offset_steps: int) -> Variant:
    """The Variant of one name; NaDeployError (one line) naming what is wrong and what is allowed."""
    base, *mods = name.strip().split("+")
    if base not in BASES:
        raise _fail(name, f"unknown base {base!r}")
    bad = [m for m in mods if m not in MODIFIERS and not m.startswith(NOISE_PREFIX)]
    if bad:
        raise _fail(name, f"unknown modifier {bad[0]!r}")
    keys = [m.split("=")[0] for m in mods]
    if len(set(keys)) != len(keys):
        raise _fail(name, "a modifier is repeated")
    noise_range = _noise_range(name, base, mods)
    modes = [m for m in mods if m in MODES] + (["accumulate"] if base == "datta" else [])
    if len(set(modes)) > 1:
        raise _fail(name, f"one neuron mode per variant, got {', '.join(sorted(set(modes)))}")
    neuron = modes[0] if modes else "subtract"
    offset = int(offset_steps) if "offset" in mods else 0
    if offset and neuron != "subtract":
        raise _fail(name, f"offset calibration runs on subtract-mode nets only, not {neuron!r}")
    training = Training(noise_adaptor=base == "na", l1=float(l1) if "l1" in mods else 0.0, noise_range=noise_range)
    return Variant(name.strip(), training, Inference(neuron, offset, base == "datta" or "shift" in mods))


def parse_variants(text: str, l1: float = 0.5, offset_steps: int = 2) -> list[Variant]:
    """`--compare` value (comma-separated names) -> Variants, in the order given; one-line errors for an empty
    list, a repeated name, an unknown name, lambda < 0 with an l1 variant, or rho < 1 with an offset variant."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise NaDeployError(f"--compare {text!r}: no variant; e.g. {','.join(DEFAULT_VARIANTS)}")
    if len(set(names)) != len(names):
        raise NaDeployError(f"--compare {text!r}: a variant is named twice")
    if not float(l1) >= 0:
        raise NaDeployError(f"--compare-l1 {l1}: the L1 penalty lambda must be >= 0")
    variants = [parse_variant(n, l1, offset_steps) for n in names]
    if any("l1" in n.split("+") for n in names) and not float(l1) > 0:
        raise NaDeployError(f"--compare-l1 {l1}: an l1 variant needs lambda > 0")
    if any("offset" in n.split("+") for n in names) and int(offset_steps) < 1:
        raise NaDeployError(f"--compare-offset-steps {offset_steps}: must be >= 1 (the first stage's steps)")
    return variants


__all__ = ["Variant", "Training", "Inference", "parse_variant", "parse_variants", "BASES", "MODIFIERS",
           "DEFAULT_VARIANTS"]
