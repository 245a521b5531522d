"""Datta et al.'s BN-bias shift (arXiv 2312.06900), in place of the pre-charge (`convert --bn-bias-shift T`).

Derivation. An IF neuron with threshold th, reset by subtraction, fed a constant current I for T steps, fires
floor((v0 + T I) / th) times (clipped to [0, T]). With v0 = 0 that is floor(T I / th): the SNN rate truncates
where the quantized ANN (C1) rounds, a systematic deviation of half a level. Datta et al. remove it by shifting
each (BN-folded) bias before conversion; the shift that makes the two agree for a window of T steps is

    b' = b + v0 / T  with the pre-charge v0 then set to 0:   floor(T (I + v0 / T) / th) = floor((v0 + T I) / th)

so for the paper's v0 = th / 2 the shift is th / (2T) per step, and the count equals our pre-charged count for
every constant input (the first layer exactly; deeper layers, whose input varies over the window, differ in
timing only). For mode "zero" (v0 = 0.3 th) the same rule moves its pre-charge. Relays keep their pre-charge:
they must re-emit their source exactly (C3). The shift is for one T, recorded in meta["bias_shift"], and
`mode_of`-style re-derivation (C8) passes it back to `convert_checkpoint`.
"""
from __future__ import annotations

import dataclasses

from na_deploy.checks import check_timestep
from na_deploy.ir import FloatNet
from na_deploy.ir.graph import replace_nodes


def apply_bias_shift(net: FloatNet, timesteps: int) -> FloatNet:
    """`net` with every layer node's pre-charge v0 moved into its bias as v0 / T per step (module doc)."""
    T = check_timestep(timesteps)
    nodes = [n if n.role == "relay" else dataclasses.replace(n, bias=n.bias + n.precharge / T, precharge=0.0)
             for n in net.nodes]
    return replace_nodes(net, nodes, bias_shift={"timesteps": T, "rule": "bias += pre-charge / T; pre-charge 0 "
                                                                      "(relays unchanged)"})


def bias_shift_of(meta: dict) -> dict:
    """The `bias_shift_timesteps` keyword of `convert_checkpoint` that made a FloatNet with this meta (C8)."""
    rec = meta.get("bias_shift")
    return {"bias_shift_timesteps": int(rec["timesteps"])} if rec else {}


__all__ = ["apply_bias_shift", "bias_shift_of"]
