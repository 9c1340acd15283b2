"""Shared fixtures: small simulated raw files (written once per session)."""

from __future__ import annotations

import os

# sigpy's ESPIRiT runs numpy SVDs: one BLAS thread per process keeps them from thrashing when
# torch already uses both cores (measured: 12-20 s instead of 0.3 s per call on a busy machine)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import shutil  # noqa: E402
from pathlib import Path

import pytest  # noqa: E402
import torch  # noqa: E402

from mridip.simulate import SimulationConfig, simulate, write_simulation  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def radial_cine(tmp_path_factory) -> Path:
    """The issue's reference case: radial cine, 64², 8 coils, 12 frames, 13 spokes per frame."""
    path = tmp_path_factory.mktemp("raw") / "radial_cine.h5"
    cfg = SimulationConfig(
        kind="cine", trajectory="radial", matrix=64, frames=12, coils=8, spokes=13
    )
    write_simulation(path, simulate(cfg))
    return path


@pytest.fixture(scope="session")
def cartesian_cine(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("raw") / "cartesian_cine.h5"
    cfg = SimulationConfig(
        kind="cine", trajectory="cartesian", matrix=48, frames=8, coils=6, acceleration=6
    )
    write_simulation(path, simulate(cfg))
    return path


@pytest.fixture(scope="session")
def radial_perfusion(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("raw") / "radial_perfusion.h5"
    cfg = SimulationConfig(
        kind="perfusion", trajectory="radial", matrix=48, frames=8, coils=6, spokes=13
    )
    write_simulation(path, simulate(cfg))
    return path


def has(tool: str) -> bool:
    return shutil.which(tool) is not None
