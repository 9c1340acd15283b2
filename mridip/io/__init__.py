"""Reading and writing: ISMRMRD raw files, MATLAB importers, results (HDF5, GIF, PNG)."""

from mridip.io.atomic import atomic_path
from mridip.io.importers import load_image_smap_mat, load_lps_mat, read_mat
from mridip.io.raw import Limit, RawDataWarning, RawHeader, RawScan, parse_header, read_raw
from mridip.io.raw_writer import RawAcquisitions, write_raw
from mridip.io.results import read_image, write_recon

__all__ = [
    "Limit",
    "RawAcquisitions",
    "RawDataWarning",
    "RawHeader",
    "RawScan",
    "atomic_path",
    "load_image_smap_mat",
    "load_lps_mat",
    "parse_header",
    "read_image",
    "read_mat",
    "read_raw",
    "write_raw",
    "write_recon",
]
