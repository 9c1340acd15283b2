"""mridip batch and the Ray executor run_tasks, on one local Ray instance with 2 CPUs.

Ray starts once for the module (it takes tens of seconds on a busy 2-core machine); the tests
that need no Ray (usage errors, Ray missing, the one-line error form) run without it.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import shutil
import stat
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mridip.batch import CRASH_ONCE_ENV, BatchConfig, one_line, run_batch, run_tasks
from mridip.cli import main
from mridip.errors import ConfigError
from mridip.simulate import SimulationConfig, simulate, write_simulation

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="ray not installed (pip install mridip[ray])"
)
OUTPUTS = ("recon.h5", "cine.gif", "montage.png", "task.json")


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance with 2 CPUs for every test of the module."""
    from mridip.batch import start_ray

    ray = pytest.importorskip("ray")
    started = start_ray(num_cpus=2)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> list[Path]:
    """Three small Cartesian cines (32², 4 frames, 4 coils) and one truncated, corrupt file."""
    folder = tmp_path_factory.mktemp("scans")
    paths = []
    for seed in range(3):
        path = folder / f"subject{seed}.h5"
        cfg = SimulationConfig(
            kind="cine", trajectory="cartesian", matrix=32, frames=4, coils=4, seed=seed
        )
        write_simulation(path, simulate(cfg))
        paths.append(path)
    corrupt = folder / "corrupt.h5"
    corrupt.write_bytes(paths[0].read_bytes()[:2048])  # a copy cut short, as a failed transfer
    return [paths[0], corrupt, paths[1], paths[2]]


@pytest.fixture(scope="module")
def first_run(ray_session, scans, tmp_path_factory):
    """``mridip batch`` over the four scans once; later tests look at what it left."""
    out = tmp_path_factory.mktemp("batch") / "out"
    code = main(
        ["batch"] + [str(p) for p in scans] + ["-o", str(out), "--method", "cgsense", "--jobs", "2"]
    )
    return code, out


# -- without Ray ----------------------------------------------------------------------------------
def test_usage_errors_exit_2_one_line(tmp_path, capsys, scans):
    cases = [
        ([], "no raw files"),
        ([tmp_path / "absent.h5"], "no such raw file"),
        ([scans[0], "--method", "nosuch"], "unknown method"),
        ([scans[0], "--device", "cuda"], "--gpus-per-task"),
        (["--list", tmp_path / "absent.txt"], "--list"),
        ([scans[0], "--method", "tv", "--ema", "0.9"], "no option --ema"),  # a DIP flag
    ]
    for args, words in cases:
        code, out, err = run(["batch", *args, "-o", tmp_path / "out"], capsys)
        assert code == 2, (args, out, err)
        assert words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "batch.json").exists()


def test_run_tasks_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="jobs"):
        run_tasks(math.sqrt, [1.0], jobs=0)
    with pytest.raises(ConfigError, match="CPUs or GPUs"):
        run_tasks(math.sqrt, [1.0], cpus_per_task=0)
    assert run_tasks(math.sqrt, []) == []


def test_missing_ray_is_one_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'mridip\[ray\]'"):
        run_tasks(math.sqrt, [1.0])


def test_gpu_out_of_memory_is_one_line():
    exc = torch.cuda.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.10 GiB total)\nmore detail"
    )
    line = one_line(exc)
    assert line.startswith("GPU out of memory: CUDA out of memory. Tried to allocate 20.00 GiB")
    assert "\n" not in line
    assert one_line(ValueError("bad\nworse")) == "ValueError: bad"


def test_progress_bar_counts_done_failed_running():
    from mridip.batch import _Progress

    stream = io.StringIO()
    meter = _Progress(total=4, window=2, stream=stream, bar=True)
    meter.update({"status": "ok", "scan": "a", "slice": 0, "seconds": 1.0, "error": None})
    meter.update({"status": "failed", "scan": "b", "slice": None, "seconds": 0.1, "error": "x"})
    meter.close()
    text = stream.getvalue()
    assert "done=1 failed=1 running=2" in text and "2/4" in text
    lines = io.StringIO()
    meter = _Progress(total=2, window=2, stream=lines, bar=False)  # not a terminal: a line each
    meter.update({"status": "failed", "scan": "b", "slice": 3, "seconds": 0.1, "error": "E: x"})
    assert lines.getvalue() == "[1/2] b slice 3: failed (E: x)\n"


# -- on Ray ---------------------------------------------------------------------------------------
@needs_ray
def test_run_tasks_records_exceptions_and_keeps_order(ray_session):
    seen = []
    outcomes = run_tasks(math.sqrt, [4.0, -1.0, 9.0], jobs=2, on_done=seen.append)
    assert [o.index for o in outcomes] == [0, 1, 2]
    assert [o.ok for o in outcomes] == [True, False, True]
    assert outcomes[0].value == 2.0 and outcomes[2].value == 3.0
    assert outcomes[1].value is None and outcomes[1].error == "ValueError: math domain error"
    assert sorted(o.index for o in seen) == [0, 1, 2]
    assert all(o.seconds >= 0 for o in outcomes)
    # a task the 2-CPU instance cannot hold is refused, not queued for ever
    with pytest.raises(ConfigError, match="asks for 1 GPUs but the Ray cluster has 0"):
        run_tasks(math.sqrt, [1.0], gpus_per_task=1)
    with pytest.raises(ConfigError, match="asks for 3 CPUs"):
        run_tasks(math.sqrt, [1.0], cpus_per_task=3)


@needs_ray
def test_batch_finishes_the_good_scans_and_records_the_corrupt_one(first_run, capsys):
    code, out = first_run
    assert code == 1
    for scan in ("subject0", "subject1", "subject2"):
        folder = out / scan / "slice00"
        assert all((folder / name).stat().st_size > 0 for name in OUTPUTS), scan
        assert not list((out / scan).glob(".*"))  # no temporary or old folders left
        umask = os.umask(0)
        os.umask(umask)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's 0700
    assert not (out / "corrupt").exists()
    report = json.loads((out / "batch.json").read_text())
    assert report["counts"] == {"ok": 3, "skipped": 0, "failed": 1}
    (bad,) = [r for r in report["slices"] if r["status"] == "failed"]
    assert bad["scan"] == "corrupt" and bad["slice"] is None
    assert bad["error"].startswith("RawDataError") and "\n" not in bad["error"]
    ok = [r for r in report["slices"] if r["status"] == "ok"]
    assert {r["device"] for r in ok} == {"cpu"} and all(r["seconds"] > 0 for r in ok)


@needs_ray
def test_rerun_does_nothing_new(first_run, scans, tmp_path, capsys):
    _, out = first_run
    h5 = out / "subject1" / "slice00" / "recon.h5"
    before = h5.stat().st_mtime_ns
    code, stdout, _ = run(["batch", *scans, "-o", out, "--method", "cgsense", "--jobs", 2], capsys)
    assert code == 1
    assert "0 done, 3 skipped (complete), 1 failed" in stdout
    assert h5.stat().st_mtime_ns == before
    rows = json.loads((out / "batch.json").read_text())["slices"]
    assert [r["status"] for r in rows] == ["skipped", "failed", "skipped", "skipped"]
    # another configuration is not the same result: it is redone (in a copy of the output)
    alt = tmp_path / "alt"
    shutil.copytree(out, alt)
    argv = ["batch", scans[2], "-o", alt, "--method", "cgsense", "--iters", 3, "--jobs", 2]
    code, stdout, _ = run(argv, capsys)
    assert code == 0 and "1 done, 0 skipped" in stdout
    with h5py.File(alt / "subject1" / "slice00" / "recon.h5") as f:
        assert json.loads(f.attrs["config"])["iters"] == 3


@needs_ray
def test_rerun_of_complete_slices_starts_no_ray(first_run, scans, tmp_path, monkeypatch):
    _, out = first_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was asked for")

    monkeypatch.setattr("mridip.batch._ray_for", no_ray)
    good = [scans[0], scans[2], scans[3]]
    report = run_batch(good, copy, BatchConfig(method="cgsense"))
    assert report.exit_code == 0 and report.count("skipped") == 3


@needs_ray
def test_images_equal_those_of_recon(first_run, scans, tmp_path, capsys):
    _, out = first_run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the batch's tasks (1 CPU each): float32 sums then agree bitwise
    try:
        for raw in (scans[0], scans[3]):
            single = tmp_path / raw.stem
            code, _, err = run(
                ["recon", raw, "-o", single, "--method", "cgsense", "--quiet"], capsys
            )
            assert code == 0, err
    finally:
        torch.set_num_threads(threads)
    for raw in (scans[0], scans[3]):
        single = tmp_path / raw.stem
        with (
            h5py.File(single / "recon.h5") as f,
            h5py.File(out / raw.stem / "slice00" / "recon.h5") as g,
        ):
            np.testing.assert_array_equal(g["image"][()], f["image"][()])
            a, b = json.loads(g.attrs["config"]), json.loads(f.attrs["config"])
            same = ("method", "iters", "seed", "raw", "slice", "maps", "coils", "group")
            assert {k: a.get(k) for k in same} == {k: b.get(k) for k in same}


@needs_ray
def test_killed_worker_is_retried_output_complete(ray_session, scans, tmp_path, monkeypatch):
    marker = tmp_path / "killed-once"
    monkeypatch.setenv(CRASH_ONCE_ENV, str(marker))
    out = tmp_path / "out"
    report = run_batch([scans[0]], out, BatchConfig(method="zf"), jobs=1, max_retries=1)
    assert marker.exists()  # the first attempt's worker did die
    assert report.exit_code == 0 and report.count("ok") == 1
    folder = out / "subject0" / "slice00"
    assert all((folder / name).stat().st_size > 0 for name in OUTPUTS)
    assert not list((out / "subject0").glob(".*"))  # the dead attempt's folder was cleared
    with h5py.File(folder / "recon.h5") as f:
        assert f["image"].shape == (4, 32, 32)


@needs_ray
def test_worker_death_without_retries_leaves_no_output(ray_session, scans, tmp_path, monkeypatch):
    monkeypatch.setenv(CRASH_ONCE_ENV, str(tmp_path / "killed-once"))
    out = tmp_path / "out"
    report = run_batch([scans[0]], out, BatchConfig(method="zf"), jobs=1, max_retries=0)
    assert report.exit_code == 1
    (row,) = report.rows
    assert row["status"] == "failed" and row["error"].startswith("worker died")
    assert not (out / "subject0" / "slice00").exists()  # absent, never partial
    shutil.rmtree(out)
