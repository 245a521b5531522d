"""Intel Loihi 2 target: limits, fixed point, fit check, bit-exact reference simulators, Lava backends.

`TARGET` is the `na_deploy.protocols.Target` object the CLI resolves for `--target loihi2`. Importing this
package does not import Lava (the Lava backends load lazily in `Loihi2Target.backend`).

    target.py, limits.py, fixed_point.py, fit.py, resources.py   the target itself (C5)
    reference/   the bit-exact integer reference simulators (C3, C6)
    lava/        backends "lava" and "lava-lif", and the frame every Lava backend shares
    netx/        lava-dl's netx format: its file, its export bundle, backend "netx"
    bundle.py    what every export bundle shares (output folder rule, templates, atomic write)
"""
from na_deploy.hw_targets.loihi2.limits import LOIHI2, Loihi2Limits
from na_deploy.hw_targets.loihi2.target import Loihi2Target

TARGET = Loihi2Target()

__all__ = ["TARGET", "Loihi2Target", "Loihi2Limits", "LOIHI2"]
