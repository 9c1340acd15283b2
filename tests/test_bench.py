from mridip.bench import machine, operator_benchmark


def test_operator_benchmark_structure():
    r = operator_benchmark(matrix=24, coils=2, frames=2, spokes=5, repeats=1)
    for key in ("nufft_autograd_s", "toeplitz_s", "fft_floor_s", "setup_kernel_s"):
        assert r[key] > 0
    assert r["speedup_toeplitz_vs_nufft"] == r["nufft_autograd_s"] / r["toeplitz_s"]
    m = machine()
    assert m["cores"] >= 1 and m["torch"]
