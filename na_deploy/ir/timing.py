"""Time in the IR (docs/contract.md C3), each rule written once: when each node's window starts, how many steps one
inference takes, and the offset-calibration steps rho (meta "offset_steps", `na_deploy.ir.offset_calibration`)
that lengthen every window.

Every simulator and backend takes these rules from here: the IR's own validation (`_Net.validate`), the
conversion API, the float SNN, the fast and the slow reference (hw_targets/loihi2/reference/), the Lava graph
builder (hw_targets/loihi2/lava/graph.py) and the step counts of `na-deploy pipeline --compare`.

    window_starts(net, T)        node -> steps of its sample's slot before its window (input 0; the depths
                                 for per-step models; + T after every "accumulate" node on the path)
    steps_per_inference(net, T)  the slot: the readout's window start + rho + T
    check_offset_steps(rho, ...) rho an integer >= 0, and > 0 only for nets of mode "subtract" nodes
    check_run(net, T) / check_offset_fits(rho, T)   rho <= T
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import numpy as np

from na_deploy.errors import IRError, OffsetStepsError, SimulationError
from na_deploy.ir.nodes import INPUT_NAME

OFFSET_MODE = "subtract"  # the one neuron mode offset calibration is defined for (C2)


def offset_steps(net) -> int:
    """rho of two-stage offset calibration (meta "offset_steps"; 0 = off), see na_deploy.ir.offset_calibration."""
    return int(net.meta.get("offset_steps", 0) or 0)


def check_offset_steps(rho: Any, what: str = "offset_steps", nodes: Iterable = ()) -> int:
    """rho as an int >= 0 (0 = no offset calibration); with `nodes`, rho > 0 only if every node runs mode
    "subtract". OffsetStepsError naming `what` (and the node) and what is allowed."""
    if isinstance(rho, bool) or not isinstance(rho, (int, np.integer)) or int(rho) < 0:
        raise OffsetStepsError(f"{what} {rho!r}: allowed: an integer >= 0 (0 = no offset calibration)")
    bad = [n for n in nodes if n.neuron.name != OFFSET_MODE] if rho else []
    if bad:
        raise OffsetStepsError(f"{what} {int(rho)}: offset calibration needs neuron mode {OFFSET_MODE}, node "
                               f"{bad[0].name} runs {bad[0].neuron.name!r}; allowed: {what} 0 for that mode")
    return int(rho)


def check_offset_fits(rho: int, timesteps: int) -> None:
    """SimulationError when offset calibration's rho steps are more than the run's T (C2: stage 1 runs inside the
    window, before stage 2)."""
    if int(rho) > int(timesteps):
        raise SimulationError(f"offset calibration ({int(rho)} steps) is longer than the run ({int(timesteps)} steps)")


def check_run(net, timesteps: int | Sequence[int]) -> None:
    """`check_offset_fits` for the net's own rho and the shortest run asked for (one T or several)."""
    ts = [int(t) for t in ([timesteps] if np.ndim(timesteps) == 0 else timesteps)]
    if ts:
        check_offset_fits(offset_steps(net), min(ts))


def window_starts(net, timesteps: int) -> dict[str, int]:
    """Steps of a sample's slot before each node's window (C3): the window is slot steps start + 1 ..
    start + T (offset calibration puts its rho steps of stage 1 first: start + 1 .. start + rho + T).

    The input emits from slot step 1 on (start 0). A node starts one step after its sources start emitting (one
    step per synaptic hop) and starts emitting `neuron.emit_delay(T)` steps after its own start (0 for per-step
    models; T for "accumulate", whose fire phase follows its T accumulate steps). For nets of per-step models
    the starts are the depths. All sources of a node must agree: IRError naming the node otherwise."""
    T = int(timesteps)
    start, emits = {INPUT_NAME: 0}, {INPUT_NAME: 0}
    for n in net.all_nodes():
        arrive = {s.source: emits[s.source] + 1 for s in n.inputs}
        if len(set(arrive.values())) != 1:
            raise IRError(f"node {n.name}: inputs arrive at different steps {arrive} (an 'accumulate' node on only "
                          "some paths shifts them by T); allowed: paths with the same number of accumulate nodes")
        start[n.name] = next(iter(arrive.values()))
        if n is not net.readout:
            emits[n.name] = start[n.name] + n.neuron.emit_delay(T)
    return start


def steps_per_inference(net, timesteps: int, rho: Optional[int] = None) -> int:
    """Steps one sample takes through the pipelined net (C3), both stages of offset calibration included: the
    readout's window start + rho + T, the length of a sample's slot in Lava (`Trace.extra["slot_steps"]`;
    equal by tests/test_compare.py). rho: the net's own unless given."""
    rho = offset_steps(net) if rho is None else int(rho)
    return window_starts(net, timesteps)[net.readout.name] + rho + int(timesteps)


__all__ = ["OFFSET_MODE", "OffsetStepsError", "offset_steps", "check_offset_steps", "check_offset_fits", "check_run",
           "window_starts", "steps_per_inference"]
