"""`Loihi2Target`: the `na_deploy.protocols.Target` implementation for Intel Loihi 2 (docs/contract.md: Targets).

Limits, fixed point, fit check, the bit-exact reference simulator and the resource model live beside this
file. Its backends, "lava" (`lava_backend.LavaBackend`, our own process, mode "subtract") and "lava-lif"
(`lava_lif_backend.LavaLIFBackend`, Lava's stock LIF, mode "zero"), are imported only when asked for, so
importing this target never imports Lava (Lava sets the multiprocessing start method at import). Lava is an
optional extra (`na-deploy[lava]`): without it every backend is refused in one line (`LavaNotInstalled`), and
the rest of the target (fixed point, fit check, reference, resources) works as before.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Iterable, Optional

import numpy as np

from na_deploy.errors import NaDeployError
from na_deploy.ir import FloatNet, IntNet
from na_deploy.protocols import Trace, Violation

from na_deploy.hw_targets.loihi2 import fit, fixed_point
from na_deploy.hw_targets.loihi2.reference import fast as reference
from na_deploy.hw_targets.loihi2.limits import LOIHI2, Loihi2Limits

# lava: our own process (mode "subtract"); lava-lif: Lava's stock LIF (mode "zero"); netx: our netx file loaded
# by lava-dl's netx.hdf5.Network (stock LIF, mode "zero", chains only)
BACKENDS = ("lava", "lava-lif", "netx")
# what each backend runs on: the module that must be installed and the distribution that installs it
NEEDS = {"lava": ("lava.magma", "lava-nc 0.10.0"), "lava-lif": ("lava.magma", "lava-nc 0.10.0"),
         "netx": ("lava.lib.dl", "lava-dl 0.6.0")}
LAVA_INSTALL = ("install with `pip install 'na-deploy[lava]'` (Python 3.10) or `bash scripts/bootstrap.sh` "
                "(Python 3.11, the pinned Lava environment)")


class LavaNotInstalled(NaDeployError):
    """A Lava backend asked for where Lava is not installed (the pipeline skips its Lava check and says so)."""


def installed(module: str) -> bool:
    """Whether `module` is importable, found without importing it (Lava sets the start method at import)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package (`lava`) is not there at all
        return False


def require_lava(backend: str) -> None:
    """One-line `LavaNotInstalled` when what `backend` runs on (NEEDS) is not installed."""
    module, dist = NEEDS[backend]
    if not installed(module):
        raise LavaNotInstalled(f"Lava is not installed: --backend {backend} runs on {dist} ({module} not found); "
                               f"{LAVA_INSTALL}")


class Loihi2Target:
    """Intel Loihi 2: its numeric limits (`limits`, used by every method and by its backends)."""

    name = "loihi2"
    default_backend = "lava"

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

    # -- resources / energy (what `na-deploy report` and the pipeline print)
    def resource_report(self, net: IntNet, trace: Optional[Trace] = None, **kw: Any) -> dict:
        from na_deploy.hw_targets.loihi2.resources import resource_report

        return resource_report(net, trace, **kw)

    def format_resource_report(self, report: dict) -> str:
        from na_deploy.hw_targets.loihi2.resources import format_resource_report

        return format_resource_report(report)

    def energy_model(self, **overrides: float):
        """The per-op energy assumptions of `resource_report` (overrides: synop_pj, neuron_update_pj, spike_pj)."""
        from dataclasses import replace

        from na_deploy.hw_targets.loihi2.resources import EnergyModel

        model = EnergyModel()
        return replace(model, source="user-supplied per-op energies", **overrides) if overrides else model

    # -- backends
    def backend(self, name: Optional[str] = None, net: Optional[IntNet] = None):
        """The backend `name` bound to this target; imports Lava (refused, `LavaNotInstalled`, where Lava is not
        installed). Default: the one that runs `net`'s neuron models ("lava-lif", Lava's stock LIF, for mode
        "zero"; else "lava", our subtractive-reset process)."""
        if name is None and net is not None and any(n.neuron.name == "zero" for n in net.nodes):
            name = "lava-lif"
        name = name or self.default_backend
        if name not in BACKENDS:
            raise NaDeployError(f"--backend {name!r}: unknown for target {self.name}; known: {', '.join(BACKENDS)}")
        require_lava(name)
        if name == "netx":
            from na_deploy.hw_targets.loihi2.netx.backend import NetxBackend

            return NetxBackend(self)
        if name == "lava-lif":
            from na_deploy.hw_targets.loihi2.lava.lif_backend import LavaLIFBackend

            return LavaLIFBackend(self)
        from na_deploy.hw_targets.loihi2.lava.backend import LavaBackend

        return LavaBackend(self)
