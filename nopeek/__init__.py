"""nopeek: split neural networks, the NoPeek defence, and honest leakage measurement.

Split models and the real split protocol, NoPeek training, leakage sweeps, figures, CLI.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nopeek")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
