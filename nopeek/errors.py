"""Every error nopeek raises for a user's input, in one module below all others.

Each message is one line that names the option, file or array at fault; the command line
prints it as `nopeek CMD: error: ...` and exits with code 2 (`USER_ERRORS`). Nothing here
imports any other part of nopeek, so every layer can raise them.
"""

from __future__ import annotations


class NopeekError(Exception):
    """Base of the errors below: what a user's input, file or setting caused."""


class ConfigError(NopeekError, ValueError):
    """A configuration value that cannot work; the message names the option."""


class DataError(NopeekError, ValueError):
    """A data set that cannot be loaded: a missing or corrupt file, or non-finite values."""


class ModelError(NopeekError, ValueError):
    """A model that cannot be built as asked: unknown name, wrong widths, bad input shape."""


class TopologyError(NopeekError, ValueError):
    """A topology that is not a valid protocol (a raw input crossing, a cycle, a bad merge...)."""


class CheckpointError(NopeekError, ValueError):
    """A checkpoint that cannot be read, or does not match the model its config describes."""


class RunFolderError(NopeekError, ValueError):
    """A run folder that cannot be used: missing, incomplete, corrupt, or already there."""


class TrainingDiverged(NopeekError, RuntimeError):
    """The loss or the parameters became NaN or Inf, or the loss exploded; nothing was written."""


class AuditError(NopeekError, ValueError):
    """An input the audit cannot use; the message is one line naming the file and array."""


class ClusterError(NopeekError, RuntimeError):
    """Groups that failed on the cluster (the finished ones are kept)."""


# What the command line reports as the user's error (one line, exit code 2); anything else
# is an internal error. OS errors about the user's paths count as the user's.
USER_ERRORS = (NopeekError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError, ValueError)

__all__ = [
    "AuditError", "CheckpointError", "ClusterError", "ConfigError", "DataError", "ModelError", "NopeekError",
    "RunFolderError", "TopologyError", "TrainingDiverged", "USER_ERRORS",
]
