"""The Lava backends of the Loihi 2 target (Lava 0.10, Loihi2SimCfg, tag fixed_pt) and what they share.

    backend.py      LavaBackend, backend "lava": our SubtractiveIF process (modes subtract, negative, accumulate;
                    offset calibration)
    lif_backend.py  LavaLIFBackend, backend "lava-lif": Lava's stock bit-accurate LIF (mode zero)
    frame.py        LavaBackendFrame: the identity and the `run` every Lava backend shares (netx's too)
    graph.py        IntNet -> Lava process graph: LavaGraph, build_lava_graph, connect_synapse
    layout.py       IR <-> Lava layouts, weight mapping, what Lava's Dense keeps
    runtime.py      running a graph without ever hanging: run_graph, run_sample_by_sample, teardown
    supervision.py  watching a running runtime: dead workers (WorkerDied), timeouts, signals
    shm_ledger.py   the shared-memory segments of Lava runs: recorded, unlinked at teardown, swept after a kill
    export.py       the bundle of `na-deploy export --format lava` (templates/: its script and README)
    processes/      our Lava processes and their fixed_pt models (Lava executes every module there)

Importing this package does not import Lava (Lava sets the multiprocessing start method when it loads, and
importing the target must not): the entry points in `__all__` are imported on first use, e.g.
`from na_deploy.hw_targets.loihi2.lava import LavaBackend`.
"""
import importlib

_ENTRY_POINTS = {"LavaBackend": "backend", "LavaLIFBackend": "lif_backend", "LavaBackendFrame": "frame",
                 "build_lava_graph": "graph", "run_graph": "runtime"}


def __getattr__(name: str):
    """An entry point of `__all__`, imported from its module on first use (PEP 562)."""
    if name not in _ENTRY_POINTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_ENTRY_POINTS[name]}"), name)


__all__ = list(_ENTRY_POINTS)
