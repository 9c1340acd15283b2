"""Importers for the MATLAB layouts of published dynamic MRI data.

Two layouts, each returning a :class:`~mridip.preprocess.LoadedScan` (``raw`` is None):

- :func:`load_lps_mat` — Otazo's L+S demos (Otazo et al., MRM 2015): ``kdata``
  ``[nx, ny, nt, nc]``, already undersampled (zeros where not sampled), and ``b1``
  ``[nx, ny, nc]``. Their Fourier operator (``fft2c_mri``) is the centred orthonormal
  *inverse* DFT, so their k-space is ours at ``-k``; the importer maps it across exactly.
- :func:`load_image_smap_mat` — an image series with coil maps (GIP's data: ``img``
  ``[nx, ny, nt]``, ``smap`` ``[nx, ny, nc]``, optionally ``mask`` ``[nx, ny, nt]``).
  The k-space is *simulated* from them: Cartesian (the file's mask, or variable-density
  masks) or golden-angle radial, with optional noise. The series is the reference.

Files: MATLAB v5/v7 (``scipy.io.loadmat``) and v7.3, which is HDF5 (read with h5py:
MATLAB writes arrays with their axes reversed and complex numbers as a ``real``/``imag``
compound; datasets with a ``MATLAB_class`` attribute are turned back into MATLAB's order).
Plain HDF5 files written from numpy are read as written.

Axes: the first MATLAB axis (``nx``, the readout) becomes our ``x`` (axis −1) and the second
(``ny``, phase encoding) our ``y`` (axis −2): image ``(T, ny, nx)``. Shown with ``imshow``,
our frames are MATLAB's ``imshow`` of the same array transposed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
import torch

from mridip.errors import KSpaceError, RawDataError
from mridip.kspace import DynamicKSpace

if TYPE_CHECKING:  # mridip.preprocess imports mridip.io: import it where it is used
    from mridip.preprocess import LoadedScan


def read_mat(path: str | os.PathLike[str], keys: list[str]) -> dict[str, np.ndarray]:
    """Arrays ``keys`` of a MATLAB file (v5/v7 or v7.3) or plain HDF5, in MATLAB axis order.

    Keys that are not in the file are left out of the result.

    Raises
    ------
    RawDataError
        Missing file, or a file that is neither a MATLAB file nor HDF5.
    """
    p = Path(path)
    if not p.is_file():
        raise RawDataError(f"no such file: {p}")
    if h5py.is_hdf5(p):
        out: dict[str, np.ndarray] = {}
        with h5py.File(p, "r") as f:
            for k in keys:
                ds = f.get(k)
                if not isinstance(ds, h5py.Dataset):
                    continue
                arr = ds[()]
                if arr.dtype.names and {"real", "imag"} <= set(arr.dtype.names):
                    arr = arr["real"] + 1j * arr["imag"]
                if "MATLAB_class" in ds.attrs:  # MATLAB is column-major: axes come reversed
                    arr = np.transpose(arr)
                out[k] = np.asarray(arr)
        return out
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(str(p), variable_names=keys)
    except (MatReadError, ValueError, NotImplementedError, OSError, TypeError) as exc:
        raise RawDataError(f"{p} is not a MATLAB file ({exc})") from None
    return {k: np.asarray(mat[k]) for k in keys if k in mat}


def _need(arrays: dict[str, np.ndarray], key: str, path: str | os.PathLike[str]) -> np.ndarray:
    if key not in arrays:
        raise RawDataError(f"{path} has no variable '{key}'")
    a = arrays[key]
    if not np.issubdtype(a.dtype, np.number):
        raise RawDataError(f"'{key}' in {path} is not numeric ({a.dtype})")
    if not np.all(np.isfinite(a)):
        raise RawDataError(f"'{key}' in {path} holds NaN or Inf")
    return a


def _flip_k(k: np.ndarray) -> np.ndarray:
    """Our centred k-space from one made with the inverse DFT: ``k → −k`` on the last two axes.

    For even sizes, index ``i`` (``k = i − N/2``) of ours is index ``(N − i) mod N`` of theirs.
    """
    return np.roll(np.flip(k, axis=(-2, -1)), 1, axis=(-2, -1))


def load_lps_mat(
    path: str | os.PathLike[str], *, kdata_key: str = "kdata", maps_key: str = "b1"
) -> LoadedScan:
    """Import the Cartesian data of Otazo's L+S demos.

    Parameters
    ----------
    path
        ``.mat`` file with ``kdata`` ``[nx, ny, nt, nc]`` (zero where not sampled; a 3-D
        ``[nx, ny, nt]`` is one coil) and ``b1`` ``[nx, ny, nc]``.
    kdata_key, maps_key
        Variable names.

    Returns
    -------
    LoadedScan
        ``kspace`` ``(nt, nc, ny, nx)`` in our convention (centred orthonormal forward DFT;
        the mask is where any coil is non-zero), ``maps`` ``(nc, ny, nx)`` as stored (not
        renormalised), no reference, ``raw`` None.

    Raises
    ------
    RawDataError
        Missing variables, shapes that do not fit, odd matrix sizes, a frame without samples.
    """
    from mridip.preprocess import LoadedScan

    arrays = read_mat(path, [kdata_key, maps_key])
    k = _need(arrays, kdata_key, path)
    b1 = _need(arrays, maps_key, path)
    if k.ndim == 3:
        k = k[..., None]
    if b1.ndim == 2:
        b1 = b1[..., None]
    if k.ndim != 4 or b1.ndim != 3:
        raise RawDataError(
            f"expected {kdata_key} [nx, ny, nt, nc] and {maps_key} [nx, ny, nc], got "
            f"{list(k.shape)} and {list(b1.shape)}"
        )
    nx, ny, nt, nc = k.shape
    if b1.shape != (nx, ny, nc):
        raise RawDataError(
            f"{maps_key} is {list(b1.shape)} but {kdata_key} needs [{nx}, {ny}, {nc}]"
        )
    if nx % 2 or ny % 2:
        raise RawDataError(f"odd matrix {nx}×{ny}: the L+S layout is imported for even sizes")
    ours = _flip_k(np.transpose(k, (2, 3, 1, 0)).astype(np.complex64))  # (nt, nc, ny, nx)
    mask = np.any(ours != 0, axis=1)
    maps = np.transpose(b1, (2, 1, 0)).astype(np.complex64)
    try:
        ks = DynamicKSpace(
            data=torch.from_numpy(np.ascontiguousarray(ours)),
            matrix=(ny, nx),
            mask=torch.from_numpy(mask),
            meta={"path": str(path), "layout": "otazo-lps", "time_dim": "frame"},
        )
    except KSpaceError as exc:
        raise RawDataError(f"{path}: {exc}") from None
    return LoadedScan(ks, torch.from_numpy(np.ascontiguousarray(maps)), None, None)


def load_image_smap_mat(
    path: str | os.PathLike[str],
    *,
    image_key: str = "img",
    maps_key: str = "smap",
    mask_key: str | None = "mask",
    trajectory: str = "cartesian",
    acceleration: float = 8.0,
    spokes: int = 13,
    noise: float = 0.0,
    seed: int = 0,
) -> LoadedScan:
    """Simulate a scan from an image series and coil maps (GIP's layout).

    The series is scaled to a peak magnitude of 1 and the maps to ``Σ_c |S_c|² = 1`` where
    they are non-zero (as GIP does); then ``y = A(x) + n`` with the chosen sampling.

    Parameters
    ----------
    path
        ``.mat`` (v5/v7/v7.3) or HDF5 file with the image ``[nx, ny, nt]`` (or one frame
        ``[nx, ny]``) and maps ``[nx, ny, nc]``.
    image_key, maps_key, mask_key
        Variable names; a ``mask`` ``[nx, ny, nt]`` in the file is used for Cartesian
        sampling (set ``mask_key=None`` to ignore it).
    trajectory
        ``cartesian`` (variable-density line masks of ``acceleration`` when the file has no
        mask) or ``radial`` (golden-angle stream, ``spokes`` per frame, 2× oversampled).
    acceleration, spokes
        Cartesian acceleration; radial spokes per frame.
    noise
        Standard deviation of complex white k-space noise per sample (image peak = 1).
    seed
        Seed of the masks and the noise.

    Returns
    -------
    LoadedScan
        Simulated ``kspace``, ``maps`` ``(nc, ny, nx)``, ``reference`` ``(nt, ny, nx)``,
        ``raw`` None.

    Raises
    ------
    RawDataError
        Missing variables, shapes that do not fit, an unknown trajectory.
    """
    from mridip import sampling
    from mridip.operators import fft2c, for_kspace
    from mridip.preprocess import LoadedScan

    keys = [image_key, maps_key] + ([mask_key] if mask_key else [])
    arrays = read_mat(path, keys)
    img = _need(arrays, image_key, path)
    smap = _need(arrays, maps_key, path)
    if img.ndim == 2:
        img = img[..., None]
    if smap.ndim == 2:
        smap = smap[..., None]
    if img.ndim != 3 or smap.ndim != 3 or smap.shape[:2] != img.shape[:2]:
        raise RawDataError(
            f"expected {image_key} [nx, ny, nt] and {maps_key} [nx, ny, nc] of the same nx, ny; "
            f"got {list(img.shape)} and {list(smap.shape)}"
        )
    nx, ny, nt = img.shape
    x = torch.from_numpy(np.ascontiguousarray(np.transpose(img, (2, 1, 0))).astype(np.complex64))
    s = torch.from_numpy(np.ascontiguousarray(np.transpose(smap, (2, 1, 0))).astype(np.complex64))
    peak = float(x.abs().max())
    if peak == 0:
        raise RawDataError(f"'{image_key}' in {path} is all zeros")
    x = x / peak
    rss = torch.linalg.vector_norm(s, dim=0, keepdim=True)
    s = torch.where(rss > 0, s / rss.clamp(min=1e-30), torch.zeros_like(s))
    gen = torch.Generator().manual_seed(seed)

    def white(shape: tuple[int, ...]) -> torch.Tensor:
        re = torch.randn(shape, generator=gen)
        im = torch.randn(shape, generator=gen)
        return (noise / np.sqrt(2.0)) * torch.complex(re, im)

    meta = {"path": str(path), "layout": "image+maps", "time_dim": "frame", "simulated": True}
    try:
        if trajectory == "cartesian":
            if mask_key and mask_key in arrays:
                m = np.asarray(arrays[mask_key]).astype(bool)
                if m.ndim == 2:
                    m = np.repeat(m[..., None], nt, axis=2)
                if m.shape != (nx, ny, nt):
                    raise RawDataError(
                        f"{mask_key} is {list(m.shape)}, expected [{nx}, {ny}, {nt}]"
                    )
                mask = torch.from_numpy(np.ascontiguousarray(np.transpose(m, (2, 1, 0))))
                meta["sampling"] = f"mask from {mask_key}"
            else:
                mask = sampling.variable_density_mask((ny, nx), nt, acceleration, seed=seed)
                meta["sampling"] = f"variable density R={acceleration:g}"
            k = fft2c(x[:, None] * s[None]) * mask[:, None]
            if noise > 0:
                k = k + white(tuple(k.shape)) * mask[:, None]
            ks = DynamicKSpace(data=k, matrix=(ny, nx), mask=mask, meta=meta)
        elif trajectory == "radial":
            traj, _ = sampling.golden_angle_radial(max(ny, nx), spokes, nt)
            dcf = sampling.radial_ramp_dcf(traj, (ny, nx))
            probe = DynamicKSpace(
                data=torch.zeros(nt, s.shape[0], traj.shape[-1], dtype=torch.complex64),
                matrix=(ny, nx),
                traj=traj,
                dcf=dcf,
            )
            y = for_kspace(probe, s, toeplitz=False).forward(x)
            if noise > 0:
                y = y + white(tuple(y.shape))
            meta = dict(meta, sampling=f"golden-angle radial, {spokes} spokes per frame")
            meta["readout_samples"] = 2 * max(ny, nx)
            meta["spokes_per_frame"] = spokes
            ks = DynamicKSpace(data=y, matrix=(ny, nx), traj=traj, dcf=dcf, meta=meta)
        else:
            raise RawDataError(f"trajectory must be cartesian or radial, not {trajectory!r}")
    except KSpaceError as exc:
        raise RawDataError(f"{path}: {exc}") from None
    return LoadedScan(ks, s, x.numpy(), None)
