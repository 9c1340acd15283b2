"""mridip: dynamic MRI reconstruction with deep image priors, from ISMRMRD raw data.

Three lines from a raw file to a cine::

    import mridip
    scan = mridip.load("scan.h5")
    rec = mridip.reconstruct(scan.kspace, method="cgsense", maps=scan.maps)
"""

__version__ = "0.1.0"

from mridip.errors import ConfigError, KSpaceError, MridipError, RawDataError, ResultError
from mridip.kspace import DynamicKSpace
from mridip.methods import METHODS, Reconstruction, reconstruct
from mridip.metrics import evaluate
from mridip.preprocess import LoadedScan, load

__all__ = [
    "METHODS",
    "ConfigError",
    "DynamicKSpace",
    "KSpaceError",
    "LoadedScan",
    "MridipError",
    "RawDataError",
    "Reconstruction",
    "ResultError",
    "__version__",
    "evaluate",
    "load",
    "reconstruct",
]
