"""Intel Loihi 2 target: limits, fixed point, fit check, bit-exact reference simulator, Lava backend.

`TARGET` is the `na_deploy.protocols.Target` object the CLI resolves for `--target loihi2`. Importing this
package does not import Lava (the Lava backend loads lazily in `Loihi2Target.build` / `run`).
"""
from na_deploy.hw_targets.loihi2.limits import LOIHI2, Loihi2Limits
from na_deploy.hw_targets.loihi2.target import Loihi2Target

TARGET = Loihi2Target()

__all__ = ["TARGET", "Loihi2Target", "Loihi2Limits", "LOIHI2"]
