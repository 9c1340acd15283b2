"""The BART bridge: .cfl files, conventions, and mridip's `tv` against BART `pics` on the same data.

Tests that run BART skip when `bart` is not on the PATH (`.ci/run` installs it with apt).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mridip
from mridip import bart
from mridip.baselines import TV_LAM, cg_sense, total_variation, zero_filled
from mridip.errors import ConfigError
from mridip.metrics import evaluate
from mridip.preprocess import load
from mridip.simulate import SimulationConfig, simulate, write_simulation

needs_bart = pytest.mark.skipif(bart.bart_executable() is None, reason="bart not on the PATH")


@pytest.fixture(scope="module")
def radial(tmp_path_factory):
    path = tmp_path_factory.mktemp("bart") / "radial.h5"
    cfg = SimulationConfig(kind="cine", matrix=32, frames=6, coils=4, spokes=9)
    write_simulation(path, simulate(cfg))
    return load(path)


@pytest.fixture(scope="module")
def cartesian(tmp_path_factory):
    path = tmp_path_factory.mktemp("bart") / "cartesian.h5"
    cfg = SimulationConfig(
        kind="cine", trajectory="cartesian", matrix=32, frames=6, coils=4, acceleration=4
    )
    write_simulation(path, simulate(cfg))
    return load(path)


def _psnr(image, scan) -> float:
    return evaluate(image, scan.reference)["psnr"]


# -- files and conventions (no BART needed) ------------------------------------------------------
def test_cfl_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    a = torch.complex(torch.randn(3, 2, 5, generator=g), torch.randn(3, 2, 5, generator=g))
    dims = [1, 5, 1, 2] + [1] * 6 + [3]
    bart.write_cfl(tmp_path / "x", a.numpy(), dims)
    assert (tmp_path / "x.hdr").read_text().splitlines()[1].split()[:4] == ["1", "5", "1", "2"]
    data, got = bart.read_cfl(tmp_path / "x")
    assert got[:4] == [1, 5, 1, 2] and got[10] == 3 and len(got) == 16
    assert np.array_equal(data.reshape(3, 2, 5), a.numpy())
    # column-major: BART's element (0, k=1, 0, coil=0, …, t=0) is the second value
    assert data[1] == a[0, 0, 1].item()
    with pytest.raises(ConfigError, match="does not fit"):
        bart.write_cfl(tmp_path / "y", a.numpy(), [4, 5])
    (tmp_path / "x.cfl").write_bytes(b"\0" * 8)
    with pytest.raises(ConfigError, match="header says"):
        bart.read_cfl(tmp_path / "x")
    with pytest.raises(ConfigError, match="cannot read"):
        bart.read_cfl(tmp_path / "missing")


def test_conversion_to_bart_conventions(radial, cartesian):
    inp = bart.to_bart(radial.kspace, radial.maps, scale=2.0)
    k = radial.kspace.data.shape[-1]
    assert inp.kspace[1][:4] == [1, k, 1, 4] and inp.kspace[1][bart.TIME_DIM] == 6
    assert inp.maps[1][:4] == [32, 32, 1, 4]
    traj, tdims = inp.traj
    assert tdims[:2] == [3, k] and tdims[bart.TIME_DIM] == 6
    coords = traj.reshape(6, k, 3).real
    assert np.abs(coords[..., :2]).max() == pytest.approx(16.0, rel=0.01)  # ±N/2
    assert np.all(coords[..., 2] == 0)
    tr = radial.kspace.traj
    assert np.allclose(coords[..., 0], tr[:, 1].numpy() * 32 / (2 * np.pi), atol=1e-4)  # k_x
    assert np.allclose(inp.kspace[0], radial.kspace.data.numpy() / 2.0)
    c = bart.to_bart(cartesian.kspace, cartesian.maps)
    assert c.kspace[1][:4] == [32, 32, 1, 4] and c.pattern[1][bart.TIME_DIM] == 6
    img = bart.from_bart_image(
        np.arange(6 * 32 * 32, dtype=np.complex64), [32, 32] + [1] * 8 + [6] + [1] * 5, (32, 32)
    )
    assert img.shape == (6, 32, 32) and img[0, 0, 1] == 1 and img[0, 1, 0] == 32
    with pytest.raises(ConfigError, match="expected 32×32"):
        bart.from_bart_image(np.zeros(64, np.complex64), [8, 8] + [1] * 14, (32, 32))


def test_missing_bart_is_a_clear_error(radial, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("BART", raising=False)
    assert bart.bart_executable() is None and bart.bart_version() is None
    with pytest.raises(ConfigError, match="BART is not installed.*apt-get install bart"):
        mridip.reconstruct(radial.kspace, "bart", radial.maps)
    from mridip.cli import main

    path = radial.raw.path
    assert main(["recon", str(path), "-o", str(tmp_path / "o"), "--method", "bart"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "BART is not installed" in err[0]
    assert not (tmp_path / "o" / "recon.h5").exists()


# -- with BART -----------------------------------------------------------------------------------
@needs_bart
@pytest.mark.parametrize("kind", ["radial", "cartesian"])
def test_bart_least_squares_matches_cg_sense(request, kind):
    """Orientation, trajectory units and scale: BART's ℓ2 solution equals CG-SENSE's."""
    scan = request.getfixturevalue(kind)
    ours = cg_sense(scan.kspace, scan.maps, iters=30, lam=0.0).image
    res = bart.pics(scan.kspace, scan.maps, ["Q:1e-6"], iters=30)
    assert res.image.shape == ours.shape and res.image.dtype == torch.complex64
    assert float((res.image - ours).norm() / ours.norm()) < 0.15
    q = evaluate(res.image, scan.reference)
    assert q["scale"] == pytest.approx(1.0, abs=0.05)  # same units as the data
    assert q["psnr"] > _psnr(zero_filled(scan.kspace, scan.maps).image, scan) + 3


@needs_bart
@pytest.mark.parametrize("kind", ["radial", "cartesian"])
def test_tv_matches_bart_pics(request, kind):
    """Done-when of issue 7: `tv` and BART `pics -R T:1024:0:λ` at matched settings (same λ,
    ADMM penalty, relaxation, CG steps and iterations; periodic differences) are within 1 dB
    of each other against the truth, and both far above zero filling."""
    scan = request.getfixturevalue(kind)
    settings = {"lam": 0.05, "iters": 60, "cg_iters": 4, "rho": 0.3}
    ours = total_variation(scan.kspace, scan.maps, circular=True, relaxation=1.6, **settings)
    theirs = bart.bart_tv(scan.kspace, scan.maps, **settings)
    assert theirs.info["lam_abs"] == pytest.approx(ours.info["lam_abs"])
    assert "T:1024:0:0.05" in theirs.info["command"]
    p_ours, p_bart = _psnr(ours.image, scan), _psnr(theirs.image, scan)
    assert abs(p_ours - p_bart) < 1.0, (p_ours, p_bart)
    zf = _psnr(zero_filled(scan.kspace, scan.maps).image, scan)
    assert min(p_ours, p_bart) > zf + 8


@needs_bart
def test_bart_method_and_failures(cartesian):
    rec = mridip.reconstruct(cartesian.kspace, "bart", cartesian.maps, iters=5, lam=TV_LAM)
    assert rec.image.shape == (6, 32, 32)
    assert rec.config["bart_version"].startswith("v") and rec.config["lam"] == TV_LAM
    with pytest.raises(ConfigError, match="Unrecognized regularization"):
        bart.pics(cartesian.kspace, cartesian.maps, ["Z:3:0:0.1"], iters=2)
    with pytest.raises(ConfigError, match="lam_spatial"):
        bart.bart_tv(cartesian.kspace, cartesian.maps, lam_spatial=-1.0)
