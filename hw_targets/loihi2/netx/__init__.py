"""lava-dl's netx format for the Loihi 2 target: mode "zero" chains as a file lava-dl's own loader runs.

    format.py   which IntNets netx expresses (netx_layers, netx_rules), the net it runs (netx_runnable: pre-charge
                folded into the bias), its timing (netx_schedule) and its file (write_netx, with h5py; no Lava)
    export.py   the bundle of `na-deploy export --format netx` (templates/: its script and README)
    backend.py  NetxBackend, backend "netx": the file loaded by `lava.lib.dl.netx.hdf5.Network` and run in Lava
                (imports Lava; `Loihi2Target.backend("netx")` makes it, so it is not imported here)
"""
from na_deploy.hw_targets.loihi2.netx.export import export_netx_bundle
from na_deploy.hw_targets.loihi2.netx.format import netx_layers, netx_rules, netx_runnable, netx_schedule, write_netx

__all__ = ["export_netx_bundle", "netx_layers", "netx_rules", "netx_runnable", "netx_schedule", "write_netx"]
