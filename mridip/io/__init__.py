"""Reading and writing: ISMRMRD raw files, MATLAB importers, results (HDF5, GIF, PNG; NIfTI,
DICOM, MRD images and MP4 with the scanner's geometry)."""

from mridip.io.atomic import atomic_path
from mridip.io.export import write_dicom, write_mp4, write_mrd, write_nifti
from mridip.io.importers import load_image_smap_mat, load_lps_mat, read_mat
from mridip.io.raw import Limit, RawDataWarning, RawHeader, RawScan, parse_header, read_raw
from mridip.io.raw_writer import RawAcquisitions, write_raw
from mridip.io.results import export_recon, read_image, read_recon, write_recon

__all__ = [
    "Limit",
    "RawAcquisitions",
    "RawDataWarning",
    "RawHeader",
    "RawScan",
    "atomic_path",
    "export_recon",
    "load_image_smap_mat",
    "load_lps_mat",
    "parse_header",
    "read_image",
    "read_mat",
    "read_raw",
    "read_recon",
    "write_dicom",
    "write_mp4",
    "write_mrd",
    "write_nifti",
    "write_raw",
    "write_recon",
]
