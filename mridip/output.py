"""What every reconstruction method returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class MethodOutput:
    """The result of a method: the baselines', the registry's (:data:`mridip.methods.METHODS`).

    Attributes
    ----------
    image
        Image series ``(T, Ny, Nx)`` complex64, in the data's units.
    history
        Per-iteration records, each a list (e.g. ``relative_residual``, ``relative_change``).
    info
        Settings the method resolved from the data (absolute weights, data scale, Lipschitz
        constant, chosen final step ...); may hold tensors (e.g. L+S's two components).
    """

    image: torch.Tensor
    history: dict[str, list[float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
