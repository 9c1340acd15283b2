"""Classical reconstructions on the same data and operators as the DIP methods.

Every function takes a :class:`~mridip.kspace.DynamicKSpace` and coil maps ``(C, Ny, Nx)``
and returns an image series ``(T, Ny, Nx)`` complex64 on the data's device, with a history.

Beside ``zf`` and CG-SENSE stand the compressed-sensing methods users compare against:
temporal (and spatial) total variation by ADMM (:func:`total_variation`), spatial wavelets of
the temporal Fourier transform by POGM (:func:`wavelet_fourier`, k-t SPARSE) and low rank plus
sparse by POGM (:func:`low_rank_plus_sparse`, Otazo et al. 2015; Lin & Fessler 2019).

Their regularisation weights are *relative*: ``λ_abs = lam · s`` with ``s`` computed from the
data and the operator (:func:`regularization_scale`), so one default works whatever the data's
scale (prewhitened scanner data, simulated files of any noise level), the coil maps'
normalisation and the trajectory. :func:`lam_sweep` and :func:`discrepancy_choice` help to
choose ``lam`` (docs/baselines.md).
Inner iterations use the operator's ``normal`` (the Toeplitz embedding for non-Cartesian data),
never a NUFFT, and every frame is processed in one tensor.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mridip.errors import ConfigError
from mridip.kspace import DynamicKSpace
from mridip.operators import DynamicSense, for_kspace


@dataclass
class BaselineResult:
    """Image series and per-iteration history of a baseline."""

    image: torch.Tensor
    history: dict[str, list[float]] = field(default_factory=dict)


def _coil_energy(maps: torch.Tensor) -> torch.Tensor:
    e = (maps.abs() ** 2).sum(0)
    return torch.where(e > 1e-6 * e.max(), e, torch.ones_like(e))


def zero_filled(kspace: DynamicKSpace, maps: torch.Tensor) -> BaselineResult:
    """Density-compensated adjoint, combined with the coil maps: ``Σ_c S_c* (Aᴴ_c D y_c) / Σ|S|²``.

    Cartesian data are zero-filled (no compensation); non-Cartesian data use ``kspace.dcf``.
    """
    op = for_kspace(kspace, maps, toeplitz=False)
    y = kspace.data if kspace.dcf is None else kspace.data * kspace.dcf
    x = op.adjoint(y) / _coil_energy(op.maps)
    return BaselineResult(x.to(torch.complex64))


def conjugate_gradient(
    normal: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    x0: torch.Tensor | None = None,
    iters: int = 10,
    tol: float = 1e-6,
) -> tuple[torch.Tensor, list[float]]:
    """Solve ``N x = b`` for a Hermitian positive (semi-)definite ``N``, frame by frame.

    Frames are independent systems solved together: step sizes are ``(T,)`` tensors, so one
    call of ``normal`` serves all frames per iteration.

    Returns
    -------
    x, history
        Solution ``(T, ...)`` and the relative residual norm after each iteration.
    """
    dims = tuple(range(1, rhs.ndim))

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a.conj() * b).sum(dim=dims).real

    def expand(v: torch.Tensor) -> torch.Tensor:
        return v.reshape(-1, *([1] * (rhs.ndim - 1)))

    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - normal(x) if x0 is not None else rhs.clone()
    p = r.clone()
    rr = dot(r, r)
    b_norm = dot(rhs, rhs).sqrt().clamp(min=1e-30)
    history: list[float] = []
    for _ in range(iters):
        ap = normal(p)
        alpha = rr / dot(p, ap).clamp(min=1e-30)
        x = x + expand(alpha) * p
        r = r - expand(alpha) * ap
        rr_new = dot(r, r)
        res = float((rr_new.sqrt() / b_norm).max())
        history.append(res)
        if res < tol:
            break
        p = r + expand(rr_new / rr.clamp(min=1e-30)) * p
        rr = rr_new
    return x, history


def cg_sense(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    iters: int = 10,
    lam: float = 0.0,
    density_weighted: bool = True,
    operator: DynamicSense | None = None,
) -> BaselineResult:
    """CG-SENSE: conjugate gradients on ``(Aᴴ W A + λ I) x = Aᴴ W y``, every frame at once.

    Parameters
    ----------
    kspace, maps
        Data and coil sensitivities ``(C, Ny, Nx)``.
    iters
        CG iterations; with few samples per frame the iteration count regularises (early
        stopping), so keep it moderate.
    lam
        Tikhonov weight relative to the mean eigenvalue of ``AᴴWA`` (estimated once), so that
        it means the same whatever the scale of the maps (prewhitened maps are far from unit
        norm) and of the density compensation.
    density_weighted
        Non-Cartesian only: ``W`` = density compensation (faster, well-conditioned) or ones
        (the plain least-squares problem).
    operator
        A prebuilt operator for ``kspace`` (its weights are used as they are).
    """
    if iters < 1:
        raise ConfigError(f"CG-SENSE needs at least one iteration, got {iters}")
    if lam < 0:
        raise ConfigError(f"lam must be ≥ 0, got {lam}")
    op = operator or for_kspace(kspace, maps, density_weighted=density_weighted)
    rhs = op.weighted_adjoint(kspace.data)
    lam_abs = lam * operator_gains(op.normal, rhs, iters=1)[0] if lam > 0 else 0.0

    def normal(x: torch.Tensor) -> torch.Tensor:
        out = op.normal(x)
        return out + lam_abs * x if lam_abs > 0 else out

    x, res = conjugate_gradient(normal, rhs, iters=iters)
    return BaselineResult(x.to(torch.complex64), {"relative_residual": res})


# -- compressed sensing: shared pieces ----------------------------------------------------------
@dataclass
class RegularizedResult(BaselineResult):
    """A :class:`BaselineResult` with the settings that were resolved from the data.

    ``info`` holds the relative weight(s) as given (``lam``), the absolute weight(s) used
    (``lam_abs``), the data scale ``s`` and the operator norm ``L`` they were derived from.
    """

    info: dict[str, Any] = field(default_factory=dict)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Real inner product ``Re⟨a, b⟩`` of whole tensors (a 0-d tensor, no host sync)."""
    return torch.vdot(a.flatten(), b.flatten()).real


def data_scale(rhs: torch.Tensor, quantile: float = 0.99) -> float:
    """A high percentile of ``|AᴴWy|``: the data's side of the unit of relative weights.

    ``AᴴWy`` grows with the data (prewhitening makes its units arbitrary) and with the operator
    (coil-map normalisation, samples per frame) exactly as the data term's gradient does, so
    ``λ = lam · s`` makes ``lam`` independent of both. A percentile rather than the maximum
    ignores a few hot voxels.

    Parameters
    ----------
    rhs
        ``AᴴWy``, ``(T, Ny, Nx)``.
    quantile
        In ``(0, 1]``.
    """
    mag = rhs.detach().abs().flatten()
    k = max(1, min(mag.numel(), int(math.ceil(quantile * mag.numel()))))
    s = float(torch.kthvalue(mag.float().cpu(), k).values)
    if not math.isfinite(s) or s <= 0:
        s = float(mag.max())
    if not math.isfinite(s) or s <= 0:
        raise ConfigError("the data are zero: nothing to reconstruct")
    return s


def operator_gains(
    normal: Callable[[torch.Tensor], torch.Tensor],
    like: torch.Tensor,
    iters: int = 15,
    seed: int = 0,
) -> tuple[float, float]:
    """Mean and largest eigenvalue of a Hermitian positive semi-definite operator.

    The mean, ``tr(N)/n``, is Hutchinson's estimate from the random start vector (exact in
    expectation, within about ``1/√n`` for one probe); the largest comes from power iteration,
    which approaches it from below, so callers that need an upper bound (step sizes) add a
    margin.

    Parameters
    ----------
    normal
        The operator, e.g. ``op.normal``.
    like
        A tensor of the operator's input shape, dtype and device.
    iters
        Power iterations.
    seed
        Seed of the random start vector.

    Raises
    ------
    ConfigError
        When the operator is zero (e.g. all-zero coil maps).
    """
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if like.dtype == torch.complex128 else torch.float32
    v = torch.complex(
        torch.randn(like.shape, generator=g, dtype=real),
        torch.randn(like.shape, generator=g, dtype=real),
    ).to(like.device)
    v = v / v.norm()
    mean = torch.zeros((), device=like.device)
    lam = torch.zeros((), device=like.device)
    for i in range(max(1, iters)):
        w = normal(v)
        lam = _dot(v, w)
        if i == 0:
            mean = lam
        v = w / w.norm().clamp(min=1e-30)
    mean_value, max_value = float(mean), float(lam)
    if not max_value > 0:
        raise ConfigError("the forward operator is zero: check the coil maps and the sampling")
    return mean_value, max_value


def max_eigenvalue(
    normal: Callable[[torch.Tensor], torch.Tensor],
    like: torch.Tensor,
    iters: int = 15,
    seed: int = 0,
) -> float:
    """Largest eigenvalue of a Hermitian positive semi-definite operator (power iteration).

    See :func:`operator_gains`.
    """
    return operator_gains(normal, like, iters, seed)[1]


def _cg(
    apply: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, x: torch.Tensor, iters: int
) -> torch.Tensor:
    """Conjugate gradients on the whole series as one system (frames coupled by the prior)."""
    r = rhs - apply(x)
    p = r.clone()
    rr = _dot(r, r)
    for _ in range(iters):
        ap = apply(p)
        alpha = rr / _dot(p, ap).clamp(min=1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = _dot(r, r)
        p = r + (rr_new / rr.clamp(min=1e-30)) * p
        rr = rr_new
    return x


def soft_threshold(z: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Complex soft thresholding ``sgn(z) · max(|z| − t, 0)`` (the prox of ``t‖·‖₁``)."""
    mag = z.abs()
    return z * ((mag - t).clamp(min=0) / mag.clamp(min=1e-30))


def finite_difference(x: torch.Tensor, dim: int, circular: bool = False) -> torch.Tensor:
    """Forward difference ``x[i+1] − x[i]`` along ``dim``, same shape as ``x``.

    ``circular``: the last entry is ``x[0] − x[-1]`` (periodic, BART's convention); otherwise it
    is zero, so a ramp in time is not penalised across the ends of a perfusion series.
    """
    d = torch.roll(x, -1, dims=dim) - x
    if not circular:
        d.narrow(dim, x.shape[dim] - 1, 1).zero_()
    return d


def finite_difference_adjoint(z: torch.Tensor, dim: int, circular: bool = False) -> torch.Tensor:
    """Adjoint of :func:`finite_difference` (a negative backward difference)."""
    if not circular:
        z = z.clone()
        z.narrow(dim, z.shape[dim] - 1, 1).zero_()
    return torch.roll(z, 1, dims=dim) - z


@dataclass(frozen=True)
class _Problem:
    """What every regularised method derives from the data before it iterates."""

    op: DynamicSense
    rhs: torch.Tensor  # AᴴWy
    scale: float  # s: the unit of relative weights
    gain: float  # tr(AᴴWA)/n over ‖AᴴWA‖
    lipschitz: float  # ‖AᴴWA‖ with a 2% margin


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
        Mean and largest eigenvalue of ``AᴴWA`` (:func:`operator_gains`).
    """
    return data_scale(rhs) * mean_gain / max_gain


def _setup(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    operator: DynamicSense | None,
    density_weighted: bool,
    seed: int,
) -> _Problem:
    op = operator or for_kspace(kspace, maps, density_weighted=density_weighted)
    rhs = op.weighted_adjoint(kspace.data)
    mean_gain, max_gain = operator_gains(op.normal, rhs, seed=seed)
    s = regularization_scale(rhs, mean_gain, max_gain)
    return _Problem(op, rhs, s, mean_gain / max_gain, 1.02 * max_gain)


def _check_common(lam: float, iters: int, name: str) -> None:
    if iters < 1:
        raise ConfigError(f"{name} needs at least one iteration, got {iters}")
    if not (lam >= 0 and math.isfinite(lam)):
        raise ConfigError(f"lam must be a finite number ≥ 0, got {lam}")


# -- total variation -----------------------------------------------------------------------------
#: Default relative weight of temporal TV (see docs/baselines.md for how it was chosen).
TV_LAM = 0.1


def total_variation(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    lam: float = TV_LAM,
    lam_spatial: float = 0.0,
    iters: int = 30,
    cg_iters: int = 4,
    rho: float = 0.1,
    circular: bool = False,
    relaxation: float = 1.0,
    density_weighted: bool = False,
    operator: DynamicSense | None = None,
    seed: int = 0,
) -> RegularizedResult:
    """Temporal (optionally plus spatial) total variation by ADMM.

    Solves ``min_x ½‖Ax − y‖²_W + λ_t ‖D_t x‖₁ + λ_s (‖D_y x‖₁ + ‖D_x x‖₁)`` for the whole
    series ``x`` ``(T, Ny, Nx)``, with finite differences ``D`` and complex magnitudes inside
    the ℓ1 norms (anisotropic in space, as BART's ``-R T:3:0:λ``).

    ADMM with the splitting ``z = Dx``: the ``x``-step solves
    ``(AᴴWA + ρDᴴD) x = AᴴWy + ρDᴴ(z − u)`` by ``cg_iters`` warm-started conjugate-gradient
    steps (each one ``normal`` of all frames), the ``z``-step soft-thresholds.

    Parameters
    ----------
    kspace, maps
        Data and coil maps ``(C, Ny, Nx)``.
    lam
        Temporal weight, relative: ``λ_t = lam · s`` with ``s`` from :func:`data_scale`.
    lam_spatial
        Spatial weight, relative in the same way (0: temporal TV only).
    iters
        ADMM iterations.
    cg_iters
        Conjugate-gradient steps per ADMM iteration.
    rho
        ADMM penalty, relative to the largest eigenvalue ``L`` of ``AᴴWA`` (``ρ = rho · L``);
        it changes the speed of convergence, not the solution.
    circular
        Periodic differences (a cine over one cardiac cycle; BART's convention).
    relaxation
        ADMM over-relaxation ``α`` in ``[1, 2)`` (Boyd et al. 2011, §3.4.3); BART's ADMM uses
        1.6.
    density_weighted
        Non-Cartesian: weight the data term with the density compensation.
    operator
        A prebuilt operator for ``kspace``.
    seed
        Seed of the power iteration.

    Returns
    -------
    RegularizedResult
        History ``primal_residual`` (``‖Dx − z‖ / ‖Dx‖``) and ``relative_change`` per
        iteration; ``info`` with ``lam``, ``lam_spatial``, ``lam_abs``, ``lam_spatial_abs``,
        ``scale``, ``lipschitz``, ``rho_abs``.

    Raises
    ------
    ConfigError
        On negative weights, fewer than one iteration, all-zero data.
    """
    _check_common(lam, iters, "TV")
    if not (lam_spatial >= 0 and math.isfinite(lam_spatial)):
        raise ConfigError(f"lam_spatial must be a finite number ≥ 0, got {lam_spatial}")
    if cg_iters < 1 or not rho > 0:
        raise ConfigError(f"cg_iters must be ≥ 1 and rho > 0, got {cg_iters} and {rho}")
    if not 0 < relaxation < 2:
        raise ConfigError(f"relaxation must be in (0, 2), got {relaxation}")
    pb = _setup(kspace, maps, operator, density_weighted, seed)
    op, rhs, s, lip = pb.op, pb.rhs, pb.scale, pb.lipschitz
    lam_t, lam_s = lam * s, lam_spatial * s
    rho_abs = rho * lip
    dims = [0] + ([1, 2] if lam_s > 0 else [])
    weights = [lam_t] + [lam_s] * (len(dims) - 1)

    def grad(x: torch.Tensor) -> list[torch.Tensor]:
        return [finite_difference(x, d, circular) for d in dims]

    def grad_adj(zs: list[torch.Tensor]) -> torch.Tensor:
        out = finite_difference_adjoint(zs[0], dims[0], circular)
        for d, z in zip(dims[1:], zs[1:], strict=True):
            out = out + finite_difference_adjoint(z, d, circular)
        return out

    def system(x: torch.Tensor) -> torch.Tensor:
        return op.normal(x) + rho_abs * grad_adj(grad(x))

    x = torch.zeros_like(rhs)
    z = [torch.zeros_like(rhs) for _ in dims]
    u = [torch.zeros_like(rhs) for _ in dims]
    hist: dict[str, list[float]] = {"primal_residual": [], "relative_change": []}
    for _ in range(iters):
        target = grad_adj([zi - ui for zi, ui in zip(z, u, strict=True)])
        x_new = _cg(system, rhs + rho_abs * target, x, cg_iters)
        change = (x_new - x).norm() / x_new.norm().clamp(min=1e-30)
        x = x_new
        dx = grad(x)
        res_num = torch.zeros((), device=x.device)
        res_den = torch.zeros((), device=x.device)
        for i, (di, wi) in enumerate(zip(dx, weights, strict=True)):
            relaxed = di if relaxation == 1 else relaxation * di + (1 - relaxation) * z[i]
            v = relaxed + u[i]
            z[i] = soft_threshold(v, wi / rho_abs) if wi > 0 else v
            u[i] = v - z[i]
            res_num = res_num + (di - z[i]).norm() ** 2
            res_den = res_den + di.norm() ** 2
        hist["primal_residual"].append(float((res_num / res_den.clamp(min=1e-30)).sqrt()))
        hist["relative_change"].append(float(change))
    info = {
        "lam": lam,
        "lam_spatial": lam_spatial,
        "lam_abs": lam_t,
        "lam_spatial_abs": lam_s,
        "scale": s,
        "lipschitz": lip,
        "rho_abs": rho_abs,
        "circular": circular,
        "relaxation": relaxation,
    }
    return RegularizedResult(x.to(torch.complex64), hist, info)


# -- orthonormal wavelets ------------------------------------------------------------------------
def _wavelet_filters(name: str) -> list[float]:
    """Low-pass analysis filter of an orthonormal wavelet."""
    if name == "haar":
        return [1 / math.sqrt(2), 1 / math.sqrt(2)]
    if name == "db2":  # Daubechies, two vanishing moments (4 taps)
        r3, d = math.sqrt(3), 4 * math.sqrt(2)
        return [(1 + r3) / d, (3 + r3) / d, (3 - r3) / d, (1 - r3) / d]
    raise ConfigError(f"unknown wavelet {name!r}; available: haar, db2")


class Wavelet2D:
    """Orthonormal periodic 2-D discrete wavelet transform over the last two axes, in torch.

    Coefficients are stored in place (the approximation of the coarsest level in the top-left
    corner), so the transform maps ``(…, Ny, Nx)`` to the same shape and is its own adjoint's
    inverse: ``inverse(forward(x)) == x`` and ``‖forward(x)‖ == ‖x‖``. Complex inputs are
    transformed as real and imaginary parts. Each level needs even sizes: ``Ny`` and ``Nx``
    must be multiples of ``2**levels``.

    Parameters
    ----------
    levels
        Decomposition levels.
    name
        ``"db2"`` (Daubechies 4 taps) or ``"haar"``.
    """

    def __init__(self, levels: int = 3, name: str = "db2") -> None:
        if levels < 1:
            raise ConfigError(f"wavelet levels must be ≥ 1, got {levels}")
        self.levels = levels
        self.name = name
        h = _wavelet_filters(name)
        n = len(h)
        g = [(-1) ** k * h[n - 1 - k] for k in range(n)]
        self._bank = torch.tensor([h, g], dtype=torch.float64)[:, None, :]  # (2, 1, n)

    def _filters(self, like: torch.Tensor) -> torch.Tensor:
        return self._bank.to(device=like.device, dtype=like.dtype)

    def _analysis(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """One level along ``dim`` of a real tensor: ``[approximation, detail]`` halves."""
        x = x.movedim(dim, -1)
        shape, n = x.shape, x.shape[-1]
        w = self._filters(x)
        flat = x.reshape(-1, 1, n)
        flat = torch.cat([flat, flat[..., : w.shape[-1] - 1]], dim=-1)  # periodic extension
        out = torch.nn.functional.conv1d(flat, w, stride=2)  # (B, 2, n/2)
        return out.reshape(*shape[:-1], n).movedim(-1, dim)

    def _synthesis(self, c: torch.Tensor, dim: int) -> torch.Tensor:
        c = c.movedim(dim, -1)
        shape, n = c.shape, c.shape[-1]
        w = self._filters(c)
        flat = c.reshape(-1, 2, n // 2)
        y = torch.nn.functional.conv_transpose1d(flat, w, stride=2)[:, 0]  # (B, n - 2 + taps)
        x = y[..., :n].clone()
        tail = y.shape[-1] - n
        if tail > 0:
            x[..., :tail] += y[..., n:]
        return x.reshape(shape).movedim(-1, dim)

    def _check(self, x: torch.Tensor) -> None:
        m = 2**self.levels
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ConfigError(
                f"{self.levels} wavelet levels need sizes that are multiples of {m}, "
                f"got {tuple(x.shape[-2:])}"
            )

    def _as_real(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        if x.is_complex():
            return torch.view_as_real(x).movedim(-1, 0).contiguous(), True
        return x, False

    def _as_input(self, r: torch.Tensor, was_complex: bool) -> torch.Tensor:
        return torch.view_as_complex(r.movedim(0, -1).contiguous()) if was_complex else r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Wavelet coefficients of ``x`` ``(…, Ny, Nx)``, same shape."""
        self._check(x)
        r, cplx = self._as_real(x)
        r = r.clone()
        ny, nx = r.shape[-2:]
        for lev in range(self.levels):
            a, b = ny >> lev, nx >> lev
            block = r[..., :a, :b]
            block = self._analysis(self._analysis(block, -1), -2)
            r[..., :a, :b] = block
        return self._as_input(r, cplx)

    def inverse(self, c: torch.Tensor) -> torch.Tensor:
        """Image from coefficients (also the adjoint of :meth:`forward`)."""
        self._check(c)
        r, cplx = self._as_real(c)
        r = r.clone()
        ny, nx = r.shape[-2:]
        for lev in reversed(range(self.levels)):
            a, b = ny >> lev, nx >> lev
            block = r[..., :a, :b]
            block = self._synthesis(self._synthesis(block, -2), -1)
            r[..., :a, :b] = block
        return self._as_input(r, cplx)


def _fft_t(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.fft(x, dim=0, norm="ortho")


def _ifft_t(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.ifft(x, dim=0, norm="ortho")


def pogm(
    grad: Callable[[torch.Tensor], torch.Tensor],
    prox: Callable[[torch.Tensor, float], torch.Tensor],
    x0: torch.Tensor,
    lipschitz: float,
    iters: int,
    on_iter: Callable[[torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Proximal optimised gradient method (Taylor et al. 2017; Kim & Fessler 2018).

    Minimises ``f(x) + g(x)`` with ``∇f`` ``lipschitz``-continuous and ``prox(v, γ)`` the
    proximal map of ``γ g``. Its worst-case bound is about half FISTA's for the same number of
    gradient evaluations; Lin & Fessler (2019) use it for low rank plus sparse dynamic MRI.
    The last iteration uses the final-step rule, so ``iters`` is part of the method.

    Parameters
    ----------
    grad, prox
        ``∇f(x)`` and ``prox(v, γ) = argmin_x γ g(x) + ½‖x − v‖²``.
    x0
        Start.
    lipschitz
        Upper bound of the Lipschitz constant of ``∇f``.
    iters
        Iterations (one gradient each).
    on_iter
        Called with each iterate.
    """
    step = 1.0 / lipschitz
    x = x0
    w_old = x0
    z_old = x0
    theta_old = 1.0
    gamma_old = step
    for k in range(1, iters + 1):
        if k < iters:
            theta = (1 + math.sqrt(4 * theta_old**2 + 1)) / 2
        else:
            theta = (1 + math.sqrt(8 * theta_old**2 + 1)) / 2
        gamma = step * (2 * theta_old + theta - 1) / theta
        w = x - step * grad(x)
        z = (
            w
            + ((theta_old - 1) / theta) * (w - w_old)
            + (theta_old / theta) * (w - x)
            + ((theta_old - 1) / (lipschitz * gamma_old * theta)) * (z_old - x)
        )
        x = prox(z, gamma)
        w_old, z_old, theta_old, gamma_old = w, z, theta, gamma
        if on_iter is not None:
            on_iter(x)
    return x


# -- spatial wavelets of the temporal Fourier transform (k-t SPARSE) -----------------------------
WAVELET_LAM = 0.05


def wavelet_fourier(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    lam: float = WAVELET_LAM,
    iters: int = 60,
    levels: int = 3,
    wavelet: str = "db2",
    temporal_fourier: bool = True,
    cycle_spinning: bool = True,
    density_weighted: bool = False,
    operator: DynamicSense | None = None,
    seed: int = 0,
) -> RegularizedResult:
    """ℓ1 of spatial wavelet coefficients of the temporal Fourier transform, by POGM.

    Solves ``min_x ½‖Ax − y‖²_W + λ ‖Ψ F_t x‖₁`` (Lustig et al.'s k-t SPARSE transform):
    ``F_t`` is the unitary FFT along time, so a static background lands in one temporal
    frequency and a beating heart in a few; ``Ψ`` an orthonormal 2-D wavelet transform of each
    temporal frequency. The transform is orthonormal, so its prox is exact soft thresholding.
    With ``cycle_spinning`` the wavelet grid is shifted by a random offset each iteration (as
    BART does), which removes the blocky artefacts of a fixed grid. Images whose size is not a
    multiple of ``2**levels`` are solved on a zero-padded grid and cropped.

    Parameters
    ----------
    kspace, maps
        Data and coil maps ``(C, Ny, Nx)``.
    lam
        Relative weight: ``λ = lam · s`` (:func:`data_scale`).
    iters
        POGM iterations (one ``normal`` each).
    levels, wavelet
        Decomposition levels and ``"db2"`` or ``"haar"``.
    temporal_fourier
        False: spatial wavelets of each frame only.
    cycle_spinning
        Random shifts of the wavelet grid (seeded).
    density_weighted, operator, seed
        As for :func:`total_variation`.

    Returns
    -------
    RegularizedResult
        History ``relative_change``; ``info`` with ``lam``, ``lam_abs``, ``scale``, ``lipschitz``.
    """
    _check_common(lam, iters, "wavelet")
    pb = _setup(kspace, maps, operator, density_weighted, seed)
    op, rhs, s, lip = pb.op, pb.rhs, pb.scale, pb.lipschitz
    lam_abs = lam * s
    psi = Wavelet2D(levels, wavelet)
    ny, nx = op.matrix
    m = 2**levels
    py, px = (-ny) % m, (-nx) % m

    def pad(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, px, 0, py)) if (py or px) else x

    def crop(x: torch.Tensor) -> torch.Tensor:
        return x[..., :ny, :nx]

    rhs_p = pad(rhs)
    gen = torch.Generator().manual_seed(seed)

    def grad(x: torch.Tensor) -> torch.Tensor:
        return pad(op.normal(crop(x))) - rhs_p

    def prox(v: torch.Tensor, gamma: float) -> torch.Tensor:
        sy, sx = 0, 0
        if cycle_spinning:
            sy, sx = (int(i) for i in torch.randint(0, m, (2,), generator=gen))
        v = torch.roll(v, (sy, sx), dims=(-2, -1))
        c = psi.forward(_fft_t(v) if temporal_fourier else v)
        c = soft_threshold(c, gamma * lam_abs)
        out = psi.inverse(c)
        out = _ifft_t(out) if temporal_fourier else out
        return torch.roll(out, (-sy, -sx), dims=(-2, -1))

    hist: dict[str, list[float]] = {"relative_change": []}
    last = [torch.zeros_like(rhs_p)]

    def record(x: torch.Tensor) -> None:
        hist["relative_change"].append(float((x - last[0]).norm() / x.norm().clamp(min=1e-30)))
        last[0] = x

    x = pogm(grad, prox, torch.zeros_like(rhs_p), lip, iters, record)
    info = {"lam": lam, "lam_abs": lam_abs, "scale": s, "lipschitz": lip, "levels": levels}
    return RegularizedResult(crop(x).to(torch.complex64), hist, info)


# -- low rank plus sparse ------------------------------------------------------------------------
LPS_LAM = 0.1
LPS_LAM_LOWRANK = 0.1


def _casorati_gram_svt(x: torch.Tensor, tau: float) -> torch.Tensor:
    """Singular-value thresholding of the Casorati matrix ``(Ny·Nx, T)`` of ``x`` ``(T, Ny, Nx)``.

    Through the ``T × T`` Gram matrix (in double precision): ``M V diag(max(1 − τ/σ, 0)) Vᴴ``
    equals ``U diag(max(σ − τ, 0)) Vᴴ`` and costs two products with the tall matrix.
    """
    t = x.shape[0]
    m = x.reshape(t, -1)  # rows = frames: M = mᵀ
    gram = (m.conj() @ m.T).to(torch.complex128)  # (T, T) = MᴴM
    evals, v = torch.linalg.eigh(gram)
    sig = evals.clamp(min=0).sqrt()
    shrink = (1 - tau / sig.clamp(min=1e-30)).clamp(min=0)
    proj = (v * shrink) @ v.conj().T  # V diag(f) Vᴴ
    return (proj.T.to(x.dtype) @ m).reshape(x.shape)


def largest_singular_value(x: torch.Tensor) -> float:
    """Largest singular value of the Casorati matrix of ``x`` ``(T, Ny, Nx)``."""
    m = x.reshape(x.shape[0], -1)
    gram = (m.conj() @ m.T).to(torch.complex128)
    return float(torch.linalg.eigvalsh(gram)[-1].clamp(min=0).sqrt())


def low_rank_plus_sparse(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    lam: float = LPS_LAM,
    lam_lowrank: float = LPS_LAM_LOWRANK,
    iters: int = 50,
    density_weighted: bool = False,
    operator: DynamicSense | None = None,
    seed: int = 0,
) -> RegularizedResult:
    """Low rank plus sparse (L+S, Otazo et al. 2015) by POGM (Lin & Fessler 2019).

    Solves ``min_{L,S} ½‖A(L + S) − y‖²_W + λ_L ‖L‖_* + λ_S ‖F_t S‖₁``: ``L`` a low-rank
    background (nuclear norm of the Casorati matrix ``(Ny·Nx, T)``, prox = singular-value
    thresholding), ``S`` the sparse dynamics in the temporal Fourier domain (prox = soft
    thresholding). The image is ``L + S``. Both blocks share the gradient ``AᴴW(A(L+S) − y)``,
    so one ``normal`` per iteration serves both; the Lipschitz constant is ``2L``.

    Parameters
    ----------
    kspace, maps
        Data and coil maps ``(C, Ny, Nx)``.
    lam
        Sparse weight, relative: ``λ_S = lam · s`` (:func:`data_scale`).
    lam_lowrank
        Low-rank weight, relative to the largest singular value of ``AᴴWy``'s Casorati
        matrix: ``λ_L = lam_lowrank · σ₁``.
    iters
        POGM iterations.
    density_weighted, operator, seed
        As for :func:`total_variation`.

    Returns
    -------
    RegularizedResult
        History ``relative_change`` and ``rank`` (of ``L``); ``info`` with ``lam``,
        ``lam_lowrank``, ``lam_abs``, ``lam_lowrank_abs``, ``scale``, ``sigma1``, ``lipschitz``;
        ``info["lowrank"]`` and ``info["sparse"]`` are the two components.
    """
    _check_common(lam, iters, "L+S")
    if not (lam_lowrank >= 0 and math.isfinite(lam_lowrank)):
        raise ConfigError(f"lam_lowrank must be a finite number ≥ 0, got {lam_lowrank}")
    pb = _setup(kspace, maps, operator, density_weighted, seed)
    op, rhs, s, lip = pb.op, pb.rhs, pb.scale, pb.lipschitz
    sigma1 = largest_singular_value(rhs) * pb.gain
    lam_s, lam_l = lam * s, lam_lowrank * sigma1

    def grad(ls: torch.Tensor) -> torch.Tensor:
        g = op.normal(ls[0] + ls[1]) - rhs
        return torch.stack([g, g])

    def prox(v: torch.Tensor, gamma: float) -> torch.Tensor:
        low = _casorati_gram_svt(v[0], gamma * lam_l)
        sparse = _ifft_t(soft_threshold(_fft_t(v[1]), gamma * lam_s))
        return torch.stack([low, sparse])

    hist: dict[str, list[float]] = {"relative_change": [], "rank": []}
    last = [torch.zeros_like(rhs)]

    def record(ls: torch.Tensor) -> None:
        img = ls[0] + ls[1]
        hist["relative_change"].append(float((img - last[0]).norm() / img.norm().clamp(min=1e-30)))
        last[0] = img
        m = ls[0].reshape(ls.shape[1], -1)
        ev = torch.linalg.eigvalsh((m.conj() @ m.T).to(torch.complex128)).clamp(min=0)
        hist["rank"].append(float((ev > 1e-10 * ev.max().clamp(min=1e-300)).sum()))

    x0 = torch.zeros(2, *rhs.shape, dtype=rhs.dtype, device=rhs.device)
    ls = pogm(grad, prox, x0, 2 * lip, iters, record)
    info = {
        "lam": lam,
        "lam_lowrank": lam_lowrank,
        "lam_abs": lam_s,
        "lam_lowrank_abs": lam_l,
        "scale": s,
        "sigma1": sigma1,
        "lipschitz": lip,
        "lowrank": ls[0].to(torch.complex64),
        "sparse": ls[1].to(torch.complex64),
    }
    return RegularizedResult((ls[0] + ls[1]).to(torch.complex64), hist, info)


# -- choosing λ ----------------------------------------------------------------------------------
#: Methods whose ``lam`` a sweep can vary.
SWEEPABLE = ("tv", "wavelet", "lps", "bart", "cgsense")


def data_consistency(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    image: torch.Tensor,
    noise_var: float = 1.0,
) -> dict[str, float]:
    """How well an image series explains the measured data.

    One forward transform (a NUFFT for non-Cartesian data) of ``image``; the residual is
    unweighted, since prewhitened noise is white.

    Parameters
    ----------
    kspace, maps
        Data and coil maps ``(C, Ny, Nx)``.
    image
        ``(T, Ny, Nx)`` in the data's units (the unscaled output of a method).
    noise_var
        Variance of the complex noise per sample: 1 for data prewhitened by :func:`mridip.load`.

    Returns
    -------
    dict
        ``relative_residual`` ``‖Ax − y‖ / ‖y‖``, ``chi2`` ``‖Ax − y‖² / (M σ²)`` over the ``M``
        measured complex samples (about 1 when the residual is the noise alone), ``samples`` M.
    """
    op = for_kspace(kspace, maps.to(kspace.device), toeplitz=False)
    pred = op.forward(image.to(kspace.device, op.dtype))
    if kspace.mask is not None:
        m = kspace.mask[:, None].expand_as(pred)
        resid = (pred - kspace.data)[m]
        y = kspace.data[m]
    else:
        resid = (pred - kspace.data).flatten()
        y = kspace.data.flatten()
    samples = int(resid.numel())
    r2 = float(resid.abs().pow(2).sum())
    return {
        "relative_residual": math.sqrt(r2) / max(float(y.norm()), 1e-30),
        "chi2": r2 / (samples * noise_var),
        "samples": float(samples),
    }


def lam_sweep(
    kspace: DynamicKSpace,
    maps: torch.Tensor,
    method: str,
    lams: Sequence[float],
    *,
    noise_var: float = 1.0,
    reference: Any = None,
    keep_images: bool = True,
    **options: Any,
) -> list[dict[str, Any]]:
    """Run a regularised method for each relative weight and report its data consistency.

    Parameters
    ----------
    kspace, maps
        Data and coil maps ``(C, Ny, Nx)`` (on the device to compute on).
    method
        A registered method that takes ``lam`` (``tv``, ``wavelet``, ``lps``, ``bart``,
        ``cgsense``).
    lams
        Relative weights to try (the ``--lam`` of the method).
    noise_var
        Noise variance per complex sample (1 after prewhitening), for ``chi2``.
    reference
        Optional true series ``(T, Ny, Nx)``: adds ``psnr`` and ``ssim`` (:func:`mridip.evaluate`).
    keep_images
        Keep each image series (``image``) in its row.
    **options
        Further options of the method (``iters``, ``lam_spatial`` …).

    Returns
    -------
    list of dict
        One row per ``lam``, in the order given: ``lam``, ``lam_abs`` (when the method reports
        it), ``relative_residual``, ``chi2``, ``seconds``, and ``psnr``/``ssim``/``image``
        as asked.

    Raises
    ------
    ConfigError
        Unknown method, no weights, a negative weight.
    """
    from mridip.methods import METHODS
    from mridip.metrics import evaluate

    if method not in SWEEPABLE or method not in METHODS:
        raise ConfigError(
            f"a λ sweep needs a regularised method ({', '.join(SWEEPABLE)}), not {method!r}"
        )
    if not lams:
        raise ConfigError("a λ sweep needs at least one value")
    if any(not (float(v) >= 0 and math.isfinite(float(v))) for v in lams):
        raise ConfigError(f"λ values must be finite and ≥ 0, got {list(lams)}")
    spec = METHODS[method]
    rows: list[dict[str, Any]] = []
    for lam in lams:
        opts = dict(options, lam=float(lam))
        opts.setdefault("iters", None)
        if kspace.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = spec.run(kspace, maps, opts)
        if kspace.device.type == "cuda":
            torch.cuda.synchronize()
        row: dict[str, Any] = {"lam": float(lam), "seconds": time.perf_counter() - t0}
        if "lam_abs" in out.info:
            row["lam_abs"] = float(out.info["lam_abs"])
        row.update(data_consistency(kspace, maps, out.image, noise_var))
        if reference is not None:
            q = evaluate(out.image, reference)
            row["psnr"], row["ssim"] = q["psnr"], q["ssim"]
        if keep_images:
            row["image"] = out.image
        rows.append(row)
    return rows


def discrepancy_choice(
    rows: Sequence[dict[str, Any]], tau: float = 1.1, noise_floor: float | None = None
) -> int:
    """Index of the row a discrepancy principle picks: the largest λ with ``chi2 ≤ tau · floor``.

    Morozov's principle regularises as much as the data allow: the residual may be as large
    as the noise, no larger. With ``noise_floor`` given (1 for prewhitened data and an exact
    model) that is the classic rule. Real and simulated data also carry model error (coil
    maps, the continuous object, off-grid physics), so by default the floor is measured: the
    smallest ``chi2`` of the sweep, i.e. the residual of its least regularised fit, and
    ``tau`` allows 10% more. Include a small λ in the sweep so that the floor is meaningful.

    Parameters
    ----------
    rows
        From :func:`lam_sweep`.
    tau
        Allowed residual relative to the floor.
    noise_floor
        ``chi2`` of the noise alone, when known.

    Raises
    ------
    ConfigError
        When ``rows`` is empty or ``tau`` < 1.
    """
    if not rows:
        raise ConfigError("no λ sweep results to choose from")
    if not tau >= 1:
        raise ConfigError(f"tau must be ≥ 1, got {tau}")
    floor = min(r["chi2"] for r in rows) if noise_floor is None else noise_floor
    fits = [i for i, r in enumerate(rows) if r["chi2"] <= tau * floor]
    if fits:
        return max(fits, key=lambda i: rows[i]["lam"])
    return min(range(len(rows)), key=lambda i: rows[i]["chi2"])
