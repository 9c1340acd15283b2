"""mridip: dynamic MRI reconstruction with deep image priors, from ISMRMRD raw data.

Three lines from a raw file to a cine::

    import mridip
    scan = mridip.load("scan.h5")
    rec = mridip.reconstruct(scan.kspace, method="cgsense", maps=scan.maps)
"""

__version__ = "0.1.0"


def _import_torchkbnufft_first() -> None:
    """Import torchkbnufft before torch_geometric can break it.

    torch_geometric replaces ``torch.index_select`` with a Python wrapper (for its HashTensor);
    torchkbnufft compiles TorchScript functions at import that call ``torch.index_select`` and
    fail to compile against the wrapper. Importing torchkbnufft first compiles them against the
    real operator. If torch_geometric was imported already, the original is put back for the
    duration of the import.
    """
    import sys

    if "torchkbnufft" in sys.modules:
        return
    import torch

    hash_tensor = sys.modules.get("torch_geometric.hash_tensor")
    original = getattr(hash_tensor, "_old_index_select", None)
    patched = torch.index_select
    if original is not None and patched is not original:
        torch.index_select = original  # type: ignore[assignment]
        try:
            import torchkbnufft  # noqa: F401
        finally:
            torch.index_select = patched  # type: ignore[assignment]
    else:
        import torchkbnufft  # noqa: F401


_import_torchkbnufft_first()

from mridip.errors import (  # noqa: E402  (after the import-order fix above)
    ConfigError,
    KSpaceError,
    MridipError,
    RawDataError,
    ResultError,
)
from mridip.kspace import DynamicKSpace  # noqa: E402
from mridip.methods import METHODS, Reconstruction, reconstruct  # noqa: E402
from mridip.metrics import evaluate  # noqa: E402
from mridip.preprocess import LoadedScan, load  # noqa: E402

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
