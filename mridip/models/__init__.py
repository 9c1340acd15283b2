"""Generators of the deep image prior: time manifolds, per-frame CNNs and the frame graph.

``build_generator(name, matrix=..., frame_times=...)`` returns an ``nn.Module`` whose
``forward()`` gives the complex image series ``(T, Ny, Nx)``; :data:`PRESETS` and
:func:`describe_presets` list what is available.
"""

from mridip.models.generators import (
    PRESETS,
    DecoderGenerator,
    Generator,
    GraphGenerator,
    PresetInfo,
    build_generator,
    describe_presets,
)
from mridip.models.latents import MANIFOLDS, MapNet, time_manifold

__all__ = [
    "MANIFOLDS",
    "PRESETS",
    "DecoderGenerator",
    "Generator",
    "GraphGenerator",
    "MapNet",
    "PresetInfo",
    "build_generator",
    "describe_presets",
    "time_manifold",
]
