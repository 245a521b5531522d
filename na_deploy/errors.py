"""One error family. Every message is one line naming the file/field/node and what is allowed.

The CLI turns any `NaDeployError` into `error: <message>` on stderr and exit code 2.
"""


class NaDeployError(Exception):
    """Base class: a user-facing error with a one-line message."""


class DataError(NaDeployError):
    """Bad data set file or array layout."""


class ModelError(NaDeployError):
    """Unknown model, unsupported layer or activation."""


class CheckpointError(NaDeployError):
    """Missing, corrupt or mismatched checkpoint."""


class IRError(NaDeployError):
    """Invalid IR graph, or a corrupt / wrong-version .nad.h5 file."""


class ConversionError(NaDeployError):
    """A torch model that cannot be converted (op named in the message)."""


class FitError(NaDeployError):
    """A network that does not fit the target's limits (node, quantity, value, limit)."""


class ExportNotSupported(NaDeployError):
    """A backend that has no export format for this net (the pipeline records it and goes on)."""


class SimulationError(NaDeployError):
    """Bad simulation request (time steps, input shape) or a backend failure."""


class OffsetStepsError(IRError, ConversionError):
    """A bad offset_steps rho (not an integer >= 0, or rho > 0 with a node not in mode "subtract"), raised by the
    one check, na_deploy/ir/timing.py. An IRError, as the IR field meta["offset_steps"] is what it checks; also a
    ConversionError, the type the conversion API (`with_offset_steps`) raised for it before (tests assert both)."""


class BackendFailure(SimulationError):
    """The backend itself failed while running (a dead Lava worker, a hung run, a crashed --jobs shard), not the
    request: the CLI prints the one line and exits 3 (cli/main.py "Exit codes"). A SimulationError, so callers
    that catch backend errors keep catching it."""
