"""Reading and writing: ISMRMRD raw files, results (HDF5, GIF, PNG) and references."""

from mridip.io.atomic import atomic_path
from mridip.io.raw import RawHeader, RawScan, read_raw
from mridip.io.raw_writer import RawAcquisitions, write_raw
from mridip.io.results import read_image, write_recon

__all__ = [
    "RawAcquisitions",
    "RawHeader",
    "RawScan",
    "atomic_path",
    "read_image",
    "read_raw",
    "write_raw",
    "write_recon",
]
