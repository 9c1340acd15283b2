"""The operator for a k-space: :class:`CartesianSense` or :class:`NonCartesianSense`."""

from __future__ import annotations

import torch

from mridip.errors import KSpaceError
from mridip.kspace import DynamicKSpace
from mridip.operators.base import DynamicSense, _check_maps
from mridip.operators.cartesian import CartesianSense
from mridip.operators.noncartesian import NonCartesianSense


def for_kspace(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    *,
    density_weighted: bool = False,
    weights: torch.Tensor | None = None,
    toeplitz: bool = True,
) -> DynamicSense:
    """Build the operator that matches ``kspace``.

    Parameters
    ----------
    kspace
        The data; its mask or trajectory and density compensation define ``A``.
    maps
        Coil sensitivities ``(C, Ny, Nx)`` on the same device as ``kspace``.
    density_weighted
        For non-Cartesian data, use the density compensation as the data weights ``W`` of
        :meth:`DynamicSense.normal` (faster convergence, not the noise-optimal least squares).
    weights
        Explicit data weights (``(T, 1, K)`` or ``(T, Ny, Nx)``), multiplied with the above.
    toeplitz
        Compute the Toeplitz kernels of a non-Cartesian operator (needed for a fast
        :meth:`DynamicSense.normal`; skip for adjoint-only use).

    Raises
    ------
    KSpaceError
        When the maps do not match the data (coils, matrix).
    """
    maps = _check_maps(maps, kspace.matrix).to(kspace.device)
    if maps.shape[0] != kspace.n_coils:
        raise KSpaceError(f"{maps.shape[0]} coil maps for {kspace.n_coils} coils of data")
    if kspace.is_cartesian:
        assert kspace.mask is not None
        return CartesianSense(maps, kspace.mask, weights=weights)
    assert kspace.traj is not None and kspace.dcf is not None
    w = kspace.dcf if density_weighted else None
    if weights is not None:
        w = weights if w is None else w * weights
    return NonCartesianSense(maps, kspace.traj, weights=w, toeplitz=toeplitz)
