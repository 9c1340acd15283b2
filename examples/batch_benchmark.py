"""Benchmark of ``mridip batch``: the same 8 slices on a local Ray instance of 1 worker, then 2.

Run: ``OPENBLAS_NUM_THREADS=1 nice -n 10 .venv/bin/python examples/batch_benchmark.py``
(about two minutes on two cores). Simulates 8 radial cines (64², 12 frames, 8 coils, 13 spokes,
one slice each) into ``out/batch_bench/raw``, reconstructs them with CG-SENSE through
:func:`mridip.batch.run_batch` (``--force``: every slice redone) with ``jobs`` = 1 and 2 (each
a fresh Ray instance of that many CPUs, one thread per task), and writes
``out/batch_bench/batch_bench.json``: per run the wall time of the slice tasks, of the whole run
(Ray's start included) and the mean wall and CPU seconds per slice, from each run's batch.json.
An optional second argument ``HOST:PORT`` runs both on that Ray cluster instead (``--ray``).
"""

import json
import sys
from pathlib import Path

from mridip.batch import BatchConfig, run_batch
from mridip.simulate import SimulationConfig, simulate, write_simulation

out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/batch_bench")
address = sys.argv[2] if len(sys.argv) > 2 else None
raws = []
for seed in range(8):
    raw = out / "raw" / f"cine{seed}.h5"
    if not raw.exists():
        raw.parent.mkdir(parents=True, exist_ok=True)
        cfg = SimulationConfig(matrix=64, frames=12, coils=8, spokes=13, seed=seed)
        write_simulation(raw, simulate(cfg))
    raws.append(raw)

config = BatchConfig(method="cgsense", device="cpu")
results = {}
for workers in (1, 2):
    report = run_batch(
        raws, out / f"workers{workers}", config, ray_address=address, jobs=workers, force=True
    )
    doc = json.loads(report.path.read_text())
    ok = [r for r in doc["slices"] if r["status"] == "ok"]
    assert len(ok) == 8, report.table()
    results[workers] = {
        "tasks_seconds": doc["tasks_seconds"],
        "run_seconds": doc["seconds"],
        "mean_slice_seconds": sum(r["seconds"] for r in ok) / len(ok),
        "mean_slice_cpu_seconds": sum(r["cpu_seconds"] for r in ok) / len(ok),
    }
    r = results[workers]
    print(
        f"{workers} worker(s): slice tasks {r['tasks_seconds']:.1f} s, whole run "
        f"{r['run_seconds']:.1f} s, per slice {r['mean_slice_seconds']:.2f} s wall, "
        f"{r['mean_slice_cpu_seconds']:.2f} s CPU"
    )
speedup = results[1]["tasks_seconds"] / results[2]["tasks_seconds"]
print(f"2 workers vs 1: {speedup:.2f}x on the slice tasks")
(out / "batch_bench.json").write_text(json.dumps({"runs": results, "speedup": speedup}, indent=1))
