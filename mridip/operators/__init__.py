"""Dynamic SENSE operators: coil sensitivities, Fourier transform and sampling of every frame.

``A`` maps an image series ``(T, Ny, Nx)`` to k-space; :func:`for_kspace` builds the right one
for a :class:`~mridip.kspace.DynamicKSpace`.
"""

from mridip.operators.base import DynamicSense, adjointness_error, normal_loss
from mridip.operators.cartesian import CartesianSense, fft2c, ifft2c
from mridip.operators.factory import for_kspace
from mridip.operators.noncartesian import NonCartesianSense

__all__ = [
    "CartesianSense",
    "DynamicSense",
    "NonCartesianSense",
    "adjointness_error",
    "fft2c",
    "for_kspace",
    "ifft2c",
    "normal_loss",
]
