"""The data model: one slice of dynamic multi-coil k-space.

Shapes (DESIGN §3), with ``T`` frames, ``C`` coils, ``K`` samples per frame:

- Cartesian: ``data`` complex64 ``(T, C, Ny, Nx)`` on a centred grid, ``mask`` bool ``(T, Ny, Nx)``.
- non-Cartesian: ``data`` complex64 ``(T, C, K)``, ``traj`` float32 ``(T, 2, K)`` in radians per
  voxel in ``[-π, π)`` with row 0 = k_y (image axis -2) and row 1 = k_x (axis -1, readout), and
  ``dcf`` float32 ``(T, 1, K)``, the density compensation.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from mridip.errors import KSpaceError
from mridip.geometry import Geometry

_TRAJ_TOL = 1e-3


@dataclass(frozen=True)
class DynamicKSpace:
    """Dynamic multi-coil k-space of one slice, validated on construction.

    Parameters
    ----------
    data
        Complex k-space: ``(T, C, Ny, Nx)`` for Cartesian data, ``(T, C, K)`` otherwise.
    matrix
        Reconstruction matrix ``(Ny, Nx)`` in voxels.
    mask
        Cartesian sampling mask ``(T, Ny, Nx)``, bool; ``data`` must be zero where it is False.
    traj
        Non-Cartesian trajectory ``(T, 2, K)`` in radians per voxel, rows ``(k_y, k_x)``.
    dcf
        Density compensation ``(T, 1, K)``, real, non-negative; defaults to ones.
    frame_times
        Acquisition time of each frame ``(T,)`` in seconds, non-decreasing; defaults to the frame
        index (one second apart), which generators treat as uniform sampling of the cycle.
    fov_mm
        Field of view ``(y, x)`` in millimetres, when known.
    geometry
        Where the slice lies in the patient (:class:`mridip.geometry.Geometry`), when the raw
        header gives it; the writers of NIfTI, DICOM and MRD images use it.
    meta
        Free-form provenance (file, slice, geometry, what the loader dropped).

    Raises
    ------
    KSpaceError
        When shapes, dtypes or values violate the invariants above (NaN/Inf data, a frame
        with no samples, a trajectory outside ``[-π, π]``, decreasing frame times ...).
    """

    data: torch.Tensor
    matrix: tuple[int, int]
    mask: torch.Tensor | None = None
    traj: torch.Tensor | None = None
    dcf: torch.Tensor | None = None
    frame_times: torch.Tensor | None = None
    fov_mm: tuple[float, float] | None = None
    geometry: Geometry | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        data = self.data
        if not isinstance(data, torch.Tensor):
            raise KSpaceError(f"k-space data must be a torch tensor, got {type(data).__name__}")
        if not data.is_complex():
            raise KSpaceError(f"k-space data must be complex, got {data.dtype}")
        if data.dtype != torch.complex64:
            object.__setattr__(self, "data", data.to(torch.complex64))
            data = self.data
        if len(self.matrix) != 2 or min(self.matrix) < 2:
            raise KSpaceError(f"matrix must be (Ny, Nx) with both ≥ 2, got {self.matrix}")
        object.__setattr__(self, "matrix", (int(self.matrix[0]), int(self.matrix[1])))
        if data.numel() == 0:
            raise KSpaceError("k-space data is empty")
        if not bool(torch.isfinite(torch.view_as_real(data)).all()):
            raise KSpaceError("k-space data holds NaN or Inf samples")
        if (self.mask is None) == (self.traj is None):
            raise KSpaceError("give exactly one of mask (Cartesian) or traj (non-Cartesian)")
        if self.mask is not None:
            self._check_cartesian()
        else:
            self._check_noncartesian()
        self._check_frame_times()

    # -- validation ---------------------------------------------------------------------------
    def _check_cartesian(self) -> None:
        data, mask = self.data, self.mask
        assert mask is not None
        if data.ndim != 4:
            raise KSpaceError(f"Cartesian k-space must be (T, C, Ny, Nx), got {tuple(data.shape)}")
        t, _, ny, nx = data.shape
        if (ny, nx) != self.matrix:
            raise KSpaceError(f"Cartesian k-space is {ny}×{nx} but matrix is {self.matrix}")
        if mask.dtype != torch.bool:
            object.__setattr__(self, "mask", mask.to(torch.bool))
            mask = self.mask
            assert mask is not None
        if tuple(mask.shape) != (t, ny, nx):
            raise KSpaceError(f"mask must be {(t, ny, nx)}, got {tuple(mask.shape)}")
        if mask.device != data.device:
            raise KSpaceError("mask and data are on different devices")
        per_frame = mask.reshape(t, -1).sum(1)
        empty = (per_frame == 0).nonzero().flatten().tolist()
        if empty:
            raise KSpaceError(f"frame(s) {empty} have no sampled k-space lines")
        if self.dcf is not None:
            raise KSpaceError("dcf is for non-Cartesian data only")

    def _check_noncartesian(self) -> None:
        data, traj = self.data, self.traj
        assert traj is not None
        if data.ndim != 3:
            raise KSpaceError(f"non-Cartesian k-space must be (T, C, K), got {tuple(data.shape)}")
        t, _, k = data.shape
        if traj.is_complex() or not traj.is_floating_point():
            raise KSpaceError(f"trajectory must be real floating point, got {traj.dtype}")
        if traj.dtype != torch.float32:
            object.__setattr__(self, "traj", traj.to(torch.float32))
            traj = self.traj
            assert traj is not None
        if tuple(traj.shape) != (t, 2, k):
            raise KSpaceError(f"trajectory must be {(t, 2, k)}, got {tuple(traj.shape)}")
        if not bool(torch.isfinite(traj).all()):
            raise KSpaceError("trajectory holds NaN or Inf")
        kmax = float(traj.abs().max())
        if kmax > math.pi * (1 + _TRAJ_TOL):
            raise KSpaceError(
                f"trajectory reaches |k| = {kmax:.3g} rad/voxel; expected [-π, π] "
                "(normalise the units first)"
            )
        if traj.device != data.device:
            raise KSpaceError("trajectory and data are on different devices")
        dcf = self.dcf
        if dcf is None:
            dcf = torch.ones(t, 1, k, device=data.device)
        if dcf.dtype != torch.float32:
            dcf = dcf.to(torch.float32)
        if tuple(dcf.shape) != (t, 1, k):
            raise KSpaceError(f"dcf must be {(t, 1, k)}, got {tuple(dcf.shape)}")
        if not bool(torch.isfinite(dcf).all()) or bool((dcf < 0).any()):
            raise KSpaceError("dcf must be finite and non-negative")
        object.__setattr__(self, "dcf", dcf)

    def _check_frame_times(self) -> None:
        t = self.data.shape[0]
        ft = self.frame_times
        if ft is None:
            ft = torch.arange(t, dtype=torch.float64)
        ft = torch.as_tensor(ft, dtype=torch.float64).cpu()
        if tuple(ft.shape) != (t,):
            raise KSpaceError(f"frame_times must be ({t},), got {tuple(ft.shape)}")
        if not bool(torch.isfinite(ft).all()):
            raise KSpaceError("frame_times hold NaN or Inf")
        if t > 1 and bool((ft[1:] < ft[:-1]).any()):
            raise KSpaceError("frame_times must be non-decreasing")
        object.__setattr__(self, "frame_times", ft)

    # -- properties ---------------------------------------------------------------------------
    @property
    def is_cartesian(self) -> bool:
        """True for masked Cartesian data, False for trajectory-based data."""
        return self.mask is not None

    @property
    def n_frames(self) -> int:
        """Number of frames ``T``."""
        return int(self.data.shape[0])

    @property
    def n_coils(self) -> int:
        """Number of (virtual) coils ``C``."""
        return int(self.data.shape[1])

    @property
    def device(self) -> torch.device:
        """Device that holds the data."""
        return self.data.device

    @property
    def acceleration(self) -> float:
        """Nominal acceleration: Nyquist samples of the matrix over samples taken per frame.

        Cartesian: lines of a full frame over the lines sampled; radial: ``π/2·N`` spokes over
        the spokes of one frame (readout oversampling does not count).
        """
        ny, nx = self.matrix
        if self.mask is not None:
            return float(self.mask.numel()) / float(self.mask.sum())
        assert self.traj is not None
        per_frame = self.traj.shape[-1]
        ro = int(self.meta.get("readout_samples", 2 * nx))
        spokes = per_frame / ro
        return (math.pi / 2 * max(ny, nx)) / spokes

    def to(self, device: str | torch.device) -> DynamicKSpace:
        """Return a copy with every tensor on ``device`` (frame times stay on the CPU)."""

        def move(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.to(device)

        return dataclasses.replace(
            self,
            data=self.data.to(device),
            mask=move(self.mask),
            traj=move(self.traj),
            dcf=move(self.dcf),
        )

    def with_geometry(self, geometry: Geometry | None) -> DynamicKSpace:
        """Return a copy that carries ``geometry`` (shares the tensors; no re-validation, since
        the geometry takes no part in the invariants)."""
        out = copy.copy(self)
        object.__setattr__(out, "geometry", geometry)
        return out

    def select_frames(self, frames: slice | list[int] | torch.Tensor) -> DynamicKSpace:
        """Return the k-space of a subset of frames (a new, validated object)."""

        def pick(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[frames]

        assert self.frame_times is not None
        return dataclasses.replace(
            self,
            data=self.data[frames],
            mask=pick(self.mask),
            traj=pick(self.traj),
            dcf=pick(self.dcf),
            frame_times=self.frame_times[frames],
        )

    def describe(self) -> str:
        """One line for logs: kind, frames, coils, matrix, acceleration."""
        kind = "Cartesian" if self.is_cartesian else "non-Cartesian"
        return (
            f"{kind}, {self.n_frames} frames, {self.n_coils} coils, "
            f"{self.matrix[0]}×{self.matrix[1]}, R≈{self.acceleration:.1f}"
        )
