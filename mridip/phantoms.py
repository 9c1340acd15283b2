"""Dynamic numerical phantoms with a known truth, and simulated coil sensitivities.

Images are ``(T, Ny, Nx)`` complex64 with magnitudes in ``[0, 1]``; coordinates are normalised
to ``[-1, 1]`` across each axis, ``y`` down (axis -2) and ``x`` across (axis -1). Shapes have soft
edges (a logistic profile about one voxel wide), so that they are close to band limited.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mridip.errors import ConfigError


@dataclass(frozen=True)
class Phantom:
    """A simulated series with its truth.

    Attributes
    ----------
    image
        ``(T, Ny, Nx)`` complex64 series (magnitude × background phase).
    frame_times
        ``(T,)`` seconds.
    kind
        ``"cine"`` or ``"perfusion"``.
    """

    image: torch.Tensor
    frame_times: torch.Tensor
    kind: str


def _grid(matrix: tuple[int, int], dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    ny, nx = matrix
    y = (torch.arange(ny, dtype=dtype) - ny / 2 + 0.5) / (ny / 2)
    x = (torch.arange(nx, dtype=dtype) - nx / 2 + 0.5) / (nx / 2)
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return yy, xx


def _ellipse(yy, xx, cy, cx, ry, rx, edge, angle=0.0):
    """Soft ellipse mask; centre and radii may be ``(T, 1, 1)`` tensors (frames batched)."""
    c, s = math.cos(angle), math.sin(angle)
    dy, dx = yy - cy, xx - cx
    u = (c * dx + s * dy) / rx
    v = (-s * dx + c * dy) / ry
    r = torch.sqrt(u * u + v * v)
    # logistic edge; ``edge`` is the width in normalised units (about one voxel)
    scale = torch.as_tensor(edge) / torch.minimum(torch.as_tensor(rx), torch.as_tensor(ry))
    return torch.sigmoid((1.0 - r) / scale)


def _as_t(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, 1, 1)


def background_phase(matrix: tuple[int, int], strength: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Smooth background phase ``(Ny, Nx)`` in radians: a random low-order polynomial."""
    g = torch.Generator().manual_seed(seed + 1000)
    yy, xx = _grid(matrix)
    a = (torch.rand(6, generator=g, dtype=torch.float64) - 0.5) * 2 * strength
    return a[0] + a[1] * xx + a[2] * yy + a[3] * xx * yy + a[4] * xx**2 + a[5] * yy**2


def from_images(
    images: torch.Tensor,
    matrix: tuple[int, int],
    frame_dt: float = 0.04,
    seed: int = 0,
) -> Phantom:
    """A series of real images ``(T, H, W)`` as a simulation object on ``matrix``.

    For retrospective studies on magnitude images (``../shared/data``'s rat cine or PINCAT):
    each frame is resampled to ``matrix`` in k-space (centre crop or zero padding, so that
    nothing outside the images' band is invented), scaled to a peak magnitude of 1, and given
    the smooth background phase of :func:`background_phase`. Frames are ``frame_dt`` seconds
    apart.
    """
    from mridip.operators.cartesian import fft2c, ifft2c

    if images.ndim != 3 or min(images.shape) < 1:
        raise ConfigError(f"images must be (frames, ny, nx), got shape {tuple(images.shape)}")
    x = images.abs().to(torch.float64) if images.is_complex() else images.to(torch.float64)
    if not torch.isfinite(x).all() or float(x.max()) <= 0:
        raise ConfigError("images must be finite and not all zero")
    k = fft2c(x.to(torch.complex128))
    for axis, (have, want) in enumerate(zip(x.shape[-2:], matrix, strict=True)):
        dim = axis - 2
        if want < have:
            lo = have // 2 - want // 2  # keeps the k-space centre (index n // 2) centred
            k = k.narrow(dim, lo, want)
        elif want > have:
            pad = [0, 0, 0, 0]
            before = want // 2 - have // 2
            pad[2 * (1 - axis)], pad[2 * (1 - axis) + 1] = before, want - have - before
            k = torch.nn.functional.pad(k, pad)
    mag = ifft2c(k).abs()
    mag = mag / mag.max()
    phase = background_phase(matrix, seed=seed)
    image = (mag * torch.exp(1j * phase)).to(torch.complex64)
    times = torch.arange(x.shape[0], dtype=torch.float64) * frame_dt
    return Phantom(image, times, "cine")


def _body(yy, xx, edge):
    body = 0.55 * _ellipse(yy, xx, 0.05, 0.0, 0.78, 0.9, edge)
    lungs = _ellipse(yy, xx, -0.05, -0.42, 0.45, 0.28, edge) + _ellipse(
        yy, xx, -0.05, 0.45, 0.45, 0.26, edge
    )
    spine = _ellipse(yy, xx, 0.62, 0.0, 0.1, 0.1, edge)
    liver = _ellipse(yy, xx, 0.55, -0.45, 0.22, 0.35, edge)
    img = body * (1 - 0.9 * lungs.clamp(max=1)) + 0.25 * spine - 0.1 * liver
    # a few small static vessels: fine detail that sparsity priors must keep
    for cy, cx, r in ((-0.35, -0.15, 0.035), (0.3, 0.55, 0.03), (0.35, -0.6, 0.025)):
        img = img + 0.4 * _ellipse(yy, xx, cy, cx, r, r, edge)
    return img


def tissue_texture(
    matrix: tuple[int, int],
    length: float = 0.02,
    seed: int = 0,
    shift: torch.Tensor | None = None,
) -> torch.Tensor:
    """A smooth random field over the FOV: zero mean, unit standard deviation, float64.

    White Gaussian noise low-pass filtered with a Gaussian whose correlation length is
    ``length`` (a fraction of the FOV), so the same seed and length give the same texture, as
    finely resolved as the grid allows, at any matrix. The texture of real tissue (fat, muscle
    fibres, trabeculae) that piecewise-constant phantoms lack and TV favours.

    ``shift`` (shape ``(T,)``, in the normalised units of the phantoms' grid, where the FOV
    spans 2) moves the field along y, one copy per entry, by a Fourier phase ramp (exact for
    the band-limited field): ``(T, Ny, Nx)``, the texture of tissue that moves as a whole.
    """
    ny, nx = matrix
    gen = torch.Generator().manual_seed(seed + 7919)
    noise = torch.randn((ny, nx), generator=gen, dtype=torch.float64)
    fy = torch.fft.fftfreq(ny, dtype=torch.float64)[:, None] * ny  # cycles per FOV
    fx = torch.fft.fftfreq(nx, dtype=torch.float64)[None, :] * nx
    filt = torch.exp(-2 * (math.pi * length) ** 2 * (fy**2 + fx**2))
    spectrum = torch.fft.fft2(noise) * filt
    spectrum[0, 0] = 0  # zero mean, whatever the shift
    field = torch.fft.ifft2(spectrum).real
    scale = field.std().clamp(min=1e-30)
    if shift is None:
        return field / scale
    # a shift of s normalised units is s·Ny/2 voxels, i.e. s/2 of the FOV (fy is in cycles/FOV)
    ramp = torch.exp(-1j * math.pi * shift.to(torch.float64)[:, None, None] * fy)
    return torch.fft.ifft2(spectrum * ramp).real / scale


def cine_phantom(
    matrix: tuple[int, int] = (64, 64),
    n_frames: int = 12,
    rr_interval: float = 1.0,
    phase_strength: float = 1.0,
    seed: int = 0,
    texture: float = 0.0,
    breathing: float = 0.0,
    resp_period: float = 4.0,
) -> Phantom:
    """A beating-heart cine over one cardiac cycle (periodic: frame ``T`` would equal frame 0).

    The left-ventricular blood pool contracts in systole, the myocardium thickens as it does,
    the right ventricle follows with a lag; the rest of the thorax is static, unless
    ``breathing`` moves it.

    Parameters
    ----------
    matrix
        ``(Ny, Nx)``.
    n_frames
        Cardiac phases over one RR interval.
    rr_interval
        Length of the cycle in seconds (sets ``frame_times``).
    phase_strength
        Amplitude of the smooth background phase (0 for a real image).
    seed
        Seed of the background phase and the texture.
    texture
        Relative amplitude of a texture (:func:`tissue_texture`) that multiplies the tissue
        around the heart (0: the piecewise-constant phantom).
    breathing
        Free breathing during the scan (a real-time series rather than a gated cine): the
        whole thorax, heart and texture included, moves head-foot (along y) by up to this
        fraction of the FOV, ``breathing · sin(2π t / resp_period)`` (0: a breath-held cine).
        The series is then no longer periodic in the cardiac cycle.
    resp_period
        Breathing period in seconds (frame times span ``rr_interval``).
    """
    yy, xx = _grid(matrix)
    edge = 1.2 / max(matrix)
    t = torch.arange(n_frames, dtype=torch.float64)
    drift = None
    if breathing:
        times = t * rr_interval / n_frames
        drift = 2 * breathing * torch.sin(2 * math.pi * times / resp_period)  # normalised units
        yy = yy - drift[:, None, None]
    phase = 2 * math.pi * t / n_frames
    contraction = _as_t(0.5 - 0.5 * torch.cos(phase))  # 0 at end-diastole, 1 at end-systole
    lv_r = 0.2 * (1 - 0.35 * contraction)
    wall = 0.07 * (1 + 0.5 * contraction)
    lv_cy, lv_cx = -0.05, 0.12
    myo_outer = _ellipse(yy, xx, lv_cy, lv_cx, lv_r + wall, lv_r * 1.05 + wall, edge)
    lv = _ellipse(yy, xx, lv_cy, lv_cx, lv_r, lv_r * 1.05, edge)
    rv_c = _as_t(0.5 - 0.5 * torch.cos(phase - 0.4))
    rv = _ellipse(yy, xx, -0.02, -0.2, 0.22 * (1 - 0.3 * rv_c), 0.12 * (1 - 0.3 * rv_c), edge, 0.3)
    papillary = _ellipse(
        yy, xx, lv_cy + 0.6 * lv_r, lv_cx - 0.3 * lv_r, 0.25 * lv_r, 0.25 * lv_r, edge
    )
    heart = myo_outer.clamp(max=1)
    body = _body(yy, xx, edge)
    if texture:  # the thorax around the heart only; the heart and its blood pools stay smooth
        body = body * (1 + texture * tissue_texture(matrix, seed=seed, shift=drift)).clamp(min=0)
    mag = body * (1 - heart) * (1 - rv) + 0.35 * heart + 0.65 * lv + 0.9 * rv * (1 - heart)
    mag = mag - 0.4 * papillary * lv
    mag = mag.clamp(min=0)
    mag = mag / mag.amax()
    ph = background_phase(matrix, phase_strength, seed)
    image = (mag * torch.exp(1j * ph)).to(torch.complex64)
    return Phantom(image, (t * rr_interval / n_frames).to(torch.float64), "cine")


def _gamma_variate(
    t: torch.Tensor, arrival: float, peak: float, alpha: float = 3.0
) -> torch.Tensor:
    """Normalised gamma-variate uptake curve (peak value 1 at ``arrival + peak``)."""
    s = ((t - arrival) / peak).clamp(min=0)
    return (s**alpha * torch.exp(alpha * (1 - s))).clamp(min=0)


def perfusion_phantom(
    matrix: tuple[int, int] = (64, 64),
    n_frames: int = 16,
    rr_interval: float = 1.0,
    resp_period: float = 5.0,
    resp_amplitude: float = 0.04,
    phase_strength: float = 1.0,
    seed: int = 0,
) -> Phantom:
    """A first-pass perfusion series, one frame per heartbeat.

    Contrast arrives in the right ventricle, then the left ventricle, then the myocardium,
    whose anterior segment is hypo-perfused (a defect); the heart moves a little with
    breathing (``resp_amplitude`` in normalised units, about 1 voxel at 64² by default).
    """
    yy, xx = _grid(matrix)
    edge = 1.2 / max(matrix)
    t = torch.arange(n_frames, dtype=torch.float64) * rr_interval
    span = max(float(t[-1]), 1.0)
    shift = _as_t(resp_amplitude * torch.sin(2 * math.pi * t / resp_period))
    rv_curve = _as_t(_gamma_variate(t, 0.08 * span, 0.15 * span))
    lv_curve = _as_t(_gamma_variate(t, 0.2 * span, 0.18 * span))
    myo_curve = _as_t(0.7 * _gamma_variate(t, 0.3 * span, 0.3 * span) + 0.15 * t / span)
    defect_curve = 0.4 * myo_curve
    lv_cy, lv_cx = -0.05 + shift, 0.12
    lv = _ellipse(yy, xx, lv_cy, lv_cx, 0.17, 0.18, edge)
    myo = (_ellipse(yy, xx, lv_cy, lv_cx, 0.27, 0.28, edge) - lv).clamp(min=0)
    anterior = torch.sigmoid(-(yy - lv_cy + 0.1) / (2 * edge)) * torch.sigmoid(
        -(xx - lv_cx) / (2 * edge)
    )
    rv = _ellipse(yy, xx, -0.02 + shift, -0.22, 0.22, 0.12, edge, 0.3) * (1 - myo - lv).clamp(min=0)
    body = (
        0.5
        * _body(yy, xx, edge)
        * (1 - _ellipse(yy, xx, lv_cy, lv_cx, 0.27, 0.28, edge))
        * (1 - rv)
    )
    mag = (
        body
        + 0.1 * (lv + rv + myo)
        + 0.9 * rv_curve * rv
        + 0.9 * lv_curve * lv
        + 0.5 * myo * (myo_curve * (1 - anterior) + defect_curve * anterior)
    )
    mag = mag.clamp(min=0)
    mag = mag / mag.amax()
    ph = background_phase(matrix, phase_strength, seed)
    image = (mag * torch.exp(1j * ph)).to(torch.complex64)
    return Phantom(image, t, "perfusion")


def coil_maps(
    matrix: tuple[int, int],
    n_coils: int = 8,
    radius: float = 1.4,
    width: float = 0.9,
    seed: int = 0,
) -> torch.Tensor:
    """Smooth complex coil sensitivities of ``n_coils`` coils on a ring around the object.

    Each coil's magnitude falls off as a Gaussian of the distance to the coil and carries a
    smooth linear phase; the set is normalised so that ``Σ_c |S_c|² = 1`` at every voxel.

    Returns
    -------
    torch.Tensor
        ``(C, Ny, Nx)`` complex64.
    """
    g = torch.Generator().manual_seed(seed + 7)
    yy, xx = _grid(matrix)
    maps = []
    for c in range(n_coils):  # set-up only
        a = 2 * math.pi * c / n_coils + 0.3
        cy, cx = radius * math.sin(a), radius * math.cos(a)
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        mag = torch.exp(-d2 / (2 * width**2))
        p = (torch.rand(3, generator=g, dtype=torch.float64) - 0.5) * 2
        phase = math.pi * p[0] + 1.2 * p[1] * xx + 1.2 * p[2] * yy
        maps.append(mag * torch.exp(1j * phase))
    s = torch.stack(maps)
    s = s / torch.sqrt((s.abs() ** 2).sum(0, keepdim=True))
    return s.to(torch.complex64)
