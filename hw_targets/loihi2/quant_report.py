"""The fixed point's quantization report (`fixed_point.to_fixed_point_with_report`, contract C5): per node its
scale, what limited it, the integer threshold, the weight errors per synapse, the saturated channels (rule 3) and
the static bound's headroom; `QuantReport.format()` is what `na-deploy convert` prints."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

ROUNDING = {
    "weights": "round half away from zero",
    "bias": "round half away from zero",
    "threshold": "round half up",
    "precharge": "threshold_int // 2 (floor) when precharge = threshold / 2, else round half up",
}


# ------------------------------------------------------------------------------------------ report
@dataclass
class SynapseQuant:
    source: str
    op: str
    exponent: int
    max_abs_int: int  # largest |integer mantissa|
    max_rel_error: float  # max |W - W_q| / max |W| (W_q the real value of the integer weight)
    zero_share: float  # share of nonzero real weights that rounded to 0
    saturated_share: float = 0.0  # share of weights clipped to the mantissa range (rule 3)


@dataclass
class NodeQuant:
    node: str
    kind: str  # "neuron" | "relay" | "graded" | "readout"
    scale: float
    limited_by: str  # what fixed the scale: "weights" or the bound / range that forced it coarser
    threshold_int: Optional[int]
    threshold_rel_error: Optional[float]
    precharge_int: Optional[int]
    bias_exp: int
    bias_max_abs_error: float  # max |b - b_q| in units of the node's scale
    synapses: list[SynapseQuant]
    bound_max_abs: float  # largest |static bound| (accumulators, current, membrane / potential)
    headroom_bits: float
    saturated: list[int] = field(default_factory=list)  # output channels whose weights saturate (rule 3)

    @property
    def max_rel_error(self) -> float:
        return max((s.max_rel_error for s in self.synapses), default=0.0)

    @property
    def zero_share(self) -> float:
        return max((s.zero_share for s in self.synapses), default=0.0)


@dataclass
class QuantReport:
    max_timesteps: int
    nodes: list[NodeQuant] = field(default_factory=list)
    rounding: dict = field(default_factory=lambda: dict(ROUNDING))

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        head = (f"{'node':<22}{'kind':<8}{'scale':>11}{'th_int':>8}{'maxErrW':>9}{'zeroW':>7}{'exp':>5}"
                f"{'bound':>11}{'room':>6}  limited by")
        lines = [f"quantization report (static bound proven for T <= {self.max_timesteps}):", head]
        for n in self.nodes:
            exps = ",".join(str(s.exponent) for s in n.synapses)
            lines.append(f"{n.node[:21]:<22}{n.kind:<8}{n.scale:>11.4g}"
                         f"{'-' if n.threshold_int is None else n.threshold_int:>8}"
                         f"{100 * n.max_rel_error:>8.2f}%{100 * n.zero_share:>6.1f}%{exps[:4]:>5}"
                         f"{n.bound_max_abs:>11.0f}{n.headroom_bits:>6.1f}  {n.limited_by}")
        for n in self.nodes:
            if n.saturated:
                share = max(s.saturated_share for s in n.synapses)
                lines.append(f"saturated: node {n.node}, output channel(s) {n.saturated}: their weights exceed the "
                             f"mantissa range at the scale that gives the threshold {n.threshold_int} units; "
                             f"{100 * share:.2f} % of the weights clipped (rule 3 of the fixed point, contract C5)")
        return "\n".join(lines)


__all__ = ["ROUNDING", "NodeQuant", "QuantReport", "SynapseQuant"]
