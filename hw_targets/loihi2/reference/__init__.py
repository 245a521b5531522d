"""The bit-exact integer reference simulators of the Loihi 2 target (docs/contract.md C3, C5, C6).

    fast.py     reference_simulate / reference_simulate_multi: the IntNet dynamics unpipelined, batched (ops in
                torch, integer steps in numpy on the CPU or torch on CUDA); what `simulate`, `verify` and the
                pipeline compare a backend against
    engines.py  where fast.py's integer steps run: numpy (CPU) or torch (CUDA, or engine="torch")
    slow.py     slow_reference_simulate: the same semantics written out literally, pipelined, one sample and one
                global step at a time (only tests use it, to prove fast.py and the Lava backends exact)

Both follow the IR's rules: neuron models (`na_deploy.ir.neuron`), window starts and offset calibration
(`na_deploy.ir.timing`, `na_deploy.ir.offset_calibration`), integer shift and wrap (`na_deploy.integer`).
"""
from na_deploy.hw_targets.loihi2.reference.fast import reference_simulate, reference_simulate_multi
from na_deploy.hw_targets.loihi2.reference.slow import slow_reference_simulate

__all__ = ["reference_simulate", "reference_simulate_multi", "slow_reference_simulate"]
