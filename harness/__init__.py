"""hyperbolic-harness: one protocol for hyperbolic vision methods.

Importing this package is cheap (no torch); the heavy modules load on demand.
"""

__version__ = "0.1.0"

from harness.hookspecs import hookimpl
from harness.specs import PluginSpec

__all__ = ["PluginSpec", "__version__", "hookimpl"]
