"""The data's units: one scale that makes weights and images independent of the data's scale."""

from __future__ import annotations

import math

import torch

from mridip.errors import ConfigError


def data_scale(image: torch.Tensor, quantile: float = 0.99) -> float:
    """A high percentile of ``|image|``: the data's unit of intensity.

    The one definition of mridip's data scale. The baselines take it of ``AᴴWy`` (the side of
    the unit of relative weights that grows with the data and the operator exactly as the data
    term's gradient does, :func:`regularization_scale`); the :class:`~mridip.recon.Reconstructor`
    takes it of the zero-filled image and divides the data by it so that the generator's
    images are O(1). Prewhitening leaves the data's units arbitrary, so both need it. A
    percentile (nearest rank) rather than the maximum ignores a few hot voxels.

    Parameters
    ----------
    image
        Any shape, e.g. ``(T, Ny, Nx)``, real or complex.
    quantile
        In ``(0, 1]``.

    Raises
    ------
    ConfigError
        When the image is zero (nothing to reconstruct).
    """
    mag = image.detach().abs().flatten()
    k = max(1, min(mag.numel(), int(math.ceil(quantile * mag.numel()))))
    s = float(torch.kthvalue(mag.float().cpu(), k).values)
    if not math.isfinite(s) or s <= 0:
        s = float(mag.max())
    if not math.isfinite(s) or s <= 0:
        raise ConfigError("the data are zero: nothing to reconstruct")
    return s


def regularization_scale(rhs: torch.Tensor, mean_gain: float, max_gain: float) -> float:
    """The unit ``s`` of relative weights: ``q₉₉(|AᴴWy|) · mean_gain / max_gain``.

    ``q₉₉(|AᴴWy|) / ‖AᴴWA‖`` estimates the image's intensity (an image's energy sits at low
    spatial frequencies, where ``AᴴWA`` has its largest gain), and ``tr(AᴴWA)/n`` is the data
    term's average gain on the details a prior acts on. Their product grows with the data
    (prewhitening leaves its units arbitrary) and with the operator (coil-map normalisation,
    samples per frame, density weighting) exactly as the data term's gradient does, so a
    weight ``λ = lam · s`` gives the same solution up to the data's scale, and one ``lam``
    suits radial and Cartesian sampling alike (docs/baselines.md).

    Parameters
    ----------
    rhs
        ``AᴴWy``, ``(T, Ny, Nx)``.
    mean_gain, max_gain
        Mean and largest eigenvalue of ``AᴴWA`` (:func:`~mridip.solvers.operator_gains`).
    """
    return data_scale(rhs) * mean_gain / max_gain
