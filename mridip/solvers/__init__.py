"""The algorithms every method shares, below the methods and above the operators.

One file per idea, each working on whole image series ``(T, Ny, Nx)`` (every frame in one
tensor) through callables such as an operator's ``normal``, so that the baselines, the coil
maps and the :class:`~mridip.recon.Reconstructor` solve with the same code:

- :mod:`~mridip.solvers.cg`: batched conjugate gradients (:func:`conjugate_gradient`);
- :mod:`~mridip.solvers.pogm`: the proximal optimised gradient method (:func:`pogm`);
- :mod:`~mridip.solvers.admm`: ADMM for ℓ1 norms of linear transforms (:func:`admm_l1`);
- :mod:`~mridip.solvers.eigen`: power method and mean-eigenvalue estimates;
- :mod:`~mridip.solvers.prox`: soft thresholding, wavelet and singular-value thresholding;
- :mod:`~mridip.solvers.transforms`: finite differences, orthonormal wavelets, temporal FFT;
- :mod:`~mridip.solvers.scale`: the data scale and the unit of relative weights.
"""

from mridip.solvers.admm import L1Term, admm_l1
from mridip.solvers.cg import conjugate_gradient
from mridip.solvers.eigen import max_eigenvalue, mean_eigenvalue, operator_gains
from mridip.solvers.pogm import pogm
from mridip.solvers.prox import (
    casorati_singular_values,
    largest_singular_value,
    singular_value_threshold,
    soft_threshold,
    wavelet_soft_threshold,
)
from mridip.solvers.scale import data_scale, regularization_scale
from mridip.solvers.transforms import (
    Wavelet2D,
    finite_difference,
    finite_difference_adjoint,
    temporal_fft,
    temporal_ifft,
)

__all__ = [
    "L1Term",
    "Wavelet2D",
    "admm_l1",
    "casorati_singular_values",
    "conjugate_gradient",
    "data_scale",
    "finite_difference",
    "finite_difference_adjoint",
    "largest_singular_value",
    "max_eigenvalue",
    "mean_eigenvalue",
    "operator_gains",
    "pogm",
    "regularization_scale",
    "singular_value_threshold",
    "soft_threshold",
    "temporal_fft",
    "temporal_ifft",
    "wavelet_soft_threshold",
]
