import math

import pytest
import torch

from mridip.errors import ResultError
from mridip.metrics import evaluate
from mridip.phantoms import cine_phantom


def test_identical_and_scaled():
    ref = cine_phantom((32, 32), 3).image
    q = evaluate(ref, ref)
    assert math.isinf(q["psnr"]) and q["ssim"] == pytest.approx(1.0) and q["nrmse"] == 0
    q2 = evaluate(3.7 * ref, ref)  # one global scale is forgiven
    assert q2["scale"] == pytest.approx(1 / 3.7, rel=1e-6) and q2["nrmse"] < 1e-6


def test_known_noise_psnr():
    g = torch.Generator().manual_seed(0)
    ref = torch.ones(4, 64, 64)
    noisy = ref + 0.01 * torch.randn(4, 64, 64, generator=g)
    q = evaluate(noisy, ref)
    assert q["psnr"] == pytest.approx(40.0, abs=0.3)  # σ = 1 % of the peak
    assert len(q["psnr_frames"]) == 4


def test_worse_image_scores_lower():
    ref = cine_phantom((32, 32), 2).image
    g = torch.Generator().manual_seed(1)
    small = ref + 0.01 * torch.randn(ref.shape, generator=g, dtype=torch.complex64)
    big = ref + 0.05 * torch.randn(ref.shape, generator=g, dtype=torch.complex64)
    a, b = evaluate(small, ref), evaluate(big, ref)
    assert a["psnr"] > b["psnr"] and a["ssim"] > b["ssim"] and a["nrmse"] < b["nrmse"]


def test_roi_and_errors():
    ref = cine_phantom((32, 32), 2).image
    roi = torch.zeros(32, 32, dtype=torch.bool)
    roi[8:24, 8:24] = True
    x = ref.clone()
    x[:, :4] = 0  # damage outside the ROI only
    assert evaluate(x, ref, roi=roi)["nrmse"] < 1e-6
    with pytest.raises(ResultError, match="reference is"):
        evaluate(ref[:, :16], ref)
    with pytest.raises(ResultError, match="zero"):
        evaluate(ref, torch.zeros_like(ref))
