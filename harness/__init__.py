"""hyperbolic-harness: one protocol for hyperbolic vision methods.

Importing this package is cheap (no torch); the heavy modules load on demand.
"""

import warnings

__version__ = "0.2.0"

# geoopt 0.5.1 decorates helpers with torch.jit.script, which torch 2.14 deprecates: harmless, and
# otherwise printed on every run.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)

from harness.hookspecs import hookimpl
from harness.specs import PluginSpec

__all__ = ["PluginSpec", "__version__", "hookimpl"]
