"""`Loihi2Target`: the `na_deploy.target.Target` implementation for Intel Loihi 2 (DESIGN: Targets).

Limits, fixed point, fit check and the bit-exact reference simulator live beside this file; the Lava backend
(`build` / `run`) lives in `lava_backend.py` and is imported only when used, so importing this target never
imports Lava (Lava sets the multiprocessing start method at import).
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np

from na_deploy.ir import FloatNet, IntNet
from na_deploy.target import Trace, Violation

from . import fit, fixed_point, reference
from .limits import LOIHI2, Loihi2Limits


def lava_backend():
    """Import the Lava backend (and so Lava) on first use; see lava_backend._let_lava_choose_fork for why the
    multiprocessing start method is handled there."""
    from . import lava_backend as backend

    return backend


class Loihi2Target:
    """Intel Loihi 2 through Lava (Loihi2SimCfg, fixed_pt)."""

    name = "loihi2"

    def __init__(self, limits: Loihi2Limits = LOIHI2):
        self.limits = limits

    def __repr__(self) -> str:
        return f"Loihi2Target(limits={self.limits!r})"

    # -- fixed point and fit (C5)
    def to_fixed_point(self, net: FloatNet, max_timesteps: Optional[int] = None) -> IntNet:
        return fixed_point.to_fixed_point(net, self.limits, max_timesteps)

    def to_fixed_point_with_report(self, net: FloatNet, max_timesteps: Optional[int] = None):
        return fixed_point.to_fixed_point_with_report(net, self.limits, max_timesteps)

    def check_fit(self, net: IntNet, timesteps: Optional[int] = None) -> list[Violation]:
        return fit.check_fit(net, self.limits, timesteps)

    # -- reference simulator (C3, C6)
    def reference_simulate(self, net: IntNet, inputs: np.ndarray, timesteps: int, **kw: Any) -> Trace:
        return reference.reference_simulate(net, inputs, timesteps, limits=self.limits, **kw)

    def reference_simulate_multi(self, net: IntNet, inputs: np.ndarray, timesteps_list: Iterable[int],
                                 **kw: Any) -> dict[int, Trace]:
        return reference.reference_simulate_multi(net, inputs, timesteps_list, limits=self.limits, **kw)

    # -- resources / energy (hw_targets/loihi2/resources.py; what `na-deploy report` and the pipeline print)
    def resource_report(self, net: IntNet, trace: Optional[Trace] = None, **kw: Any) -> dict:
        from .resources import resource_report

        return resource_report(net, trace, **kw)

    # -- Lava backend (lazy: lava is imported only here)
    def build(self, net: IntNet, **kw: Any):
        """The Lava process graph (lava_backend.build_lava_graph); imports Lava."""
        return lava_backend().build_lava_graph(net, **kw)

    def run(self, net: IntNet, inputs: np.ndarray, timesteps: int, **kw: Any) -> Trace:
        """Run on Lava (Loihi2SimCfg, fixed_pt) -> Trace (lava_backend.run_lava); imports Lava."""
        return lava_backend().run_lava(net, inputs, timesteps, **kw)

    def verify(self, net: IntNet, inputs: np.ndarray, timesteps: int, **kw: Any):
        """Reference vs Lava on the same samples, every node (C6) -> lava_backend.VerifyReport."""
        return lava_backend().verify_lava(net, inputs, timesteps, **kw)

    def export(self, net: IntNet, out_dir, **kw: Any):
        """Write a self-contained Lava bundle (net, runnable script, README) -> its folder."""
        return lava_backend().export_lava_bundle(net, out_dir, **kw)
