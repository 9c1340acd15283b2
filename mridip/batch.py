"""Many scans and slices on Ray: one task per slice, resumable, fault-tolerant.

Two layers live here. :func:`run_tasks` is the generic executor: it fans a module-level function
out over a list of items as Ray tasks, lets Ray retry a task whose worker process died, records
an exception raised by the function as a failed :class:`TaskOutcome` (never retried: a corrupt
file stays corrupt), and reports each outcome as it arrives. ``mridip batch`` and
``mridip study --ray`` both run on it.

Ray is an optional extra (``pip install 'mridip[ray]'``): it is imported inside the functions
only, and its absence is one :class:`~mridip.errors.ConfigError` line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mridip.errors import ConfigError

__all__ = ["BatchConfig", "BatchReport", "TaskOutcome", "run_batch", "run_tasks", "start_ray"]

#: Environment variable of the fault-injection test: when it names a file that does not exist
#: yet, the first slice task to finish writing creates it and kills its own worker process
#: (``os._exit``) before its output is renamed into place, as a node lost mid-write would.
CRASH_ONCE_ENV = "MRIDIP_BATCH_CRASH_ONCE"


@dataclass(frozen=True)
class TaskOutcome:
    """What one task of :func:`run_tasks` ended with.

    Attributes
    ----------
    index : int
        Position of the task's item in the ``items`` given to :func:`run_tasks`.
    ok : bool
        True when the function returned; False when it raised or its worker died for good.
    value : Any
        The function's return value (None when ``ok`` is False).
    error : str or None
        One line: the exception's type and message, or why the worker died.
    seconds : float
        Wall time of the last attempt in the worker (of the whole wait when the worker died).
    """

    index: int
    ok: bool
    value: Any
    error: str | None
    seconds: float


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` for a summary table (a traceback does not fit)."""
    text = str(exc).strip().splitlines()
    name = type(exc).__name__
    if name == "OutOfMemoryError" or "out of memory" in (text[0].lower() if text else ""):
        name = "GPU out of memory" if "cuda" in str(exc).lower() else name
    return f"{name}: {text[0]}" if text else name


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "Ray is not installed: pip install 'mridip[ray]' (or run without --ray)"
        ) from None
    return ray


def _attempt(fn: Callable[[Any], Any], item: Any) -> tuple[bool, Any, str | None, float]:
    """Run ``fn(item)`` in a worker; an exception becomes a failed result, not a Ray error."""
    t0 = time.perf_counter()
    try:
        value = fn(item)
    except Exception as exc:  # noqa: BLE001 - every application error is recorded, never retried
        return False, None, one_line(exc), time.perf_counter() - t0
    return True, value, None, time.perf_counter() - t0


def start_ray(
    address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None
) -> bool:
    """Start an embedded local Ray instance, or join a cluster; return whether this call started it.

    Parameters
    ----------
    address : str, optional
        None or ``"local"``: a new local instance sized to this machine (or
        ``num_cpus``/``num_gpus``), even when a cluster runs on this node;
        ``"auto"``: the cluster that ``ray start`` set up on this node; ``"HOST:PORT"`` or
        ``"ray://HOST:PORT"``: that cluster.
    num_cpus, num_gpus : int, optional
        Size of the local instance (ignored when joining a cluster).

    Returns
    -------
    bool
        True when this call initialised Ray (the caller then shuts it down), False when Ray was
        already running in this process (a test's shared session, a notebook).

    Raises
    ------
    ConfigError
        Ray is not installed, or the cluster cannot be reached.
    """
    ray = _import_ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = dict(
        include_dashboard=False,
        log_to_driver=False,  # task output would break the progress bar
        logging_level="error",
        configure_logging=True,
    )
    if address is None or address == "local":
        # "local": a new instance even when `ray start` or RAY_ADDRESS names a cluster (plain
        # ray.init() would join it); a small object store: the images go to disk, not through it
        kwargs.update(
            address="local",
            num_cpus=num_cpus or os.cpu_count() or 1,
            object_store_memory=200 * 2**20,
        )
        if num_gpus is not None:
            kwargs["num_gpus"] = num_gpus
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        local = address in (None, "local")
        target = "a local Ray instance" if local else f"Ray cluster at {address}"
        raise ConfigError(f"cannot start or join {target}: {one_line(exc)}") from None
    return True


def _capacity(ray: Any, cpus_per_task: float, gpus_per_task: float) -> int:
    """How many tasks the cluster can run at once with these resources per task."""
    res = ray.cluster_resources()
    slots = []
    if cpus_per_task > 0:
        slots.append(int(res.get("CPU", 0) // cpus_per_task))
    if gpus_per_task > 0:
        slots.append(int(res.get("GPU", 0) // gpus_per_task))
    return max(1, min(slots) if slots else 1)


def run_tasks(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    ray_address: str | None = None,
    jobs: int | None = None,
    cpus_per_task: float = 1,
    gpus_per_task: float = 0,
    max_retries: int = 2,
    on_done: Callable[[TaskOutcome], None] | None = None,
) -> list[TaskOutcome]:
    """Run ``fn(item)`` for every item as Ray tasks; return one outcome per item, in item order.

    An exception raised by ``fn`` is recorded in its outcome (``ok=False``, one-line ``error``)
    and not retried, and the other tasks go on. A worker process that dies mid-task (killed,
    out of host memory, segfault) is a system failure that Ray retries up to ``max_retries``
    times; after that the outcome records the death.

    Parameters
    ----------
    fn : callable
        A module-level (picklable) function of one item. Its return value must be picklable and
        small: it travels through Ray's object store.
    items : sequence
        The tasks' arguments.
    ray_address : str, optional
        None: use the Ray instance already running in this process, else start a local one sized
        to ``jobs × cpus_per_task`` CPUs (all CPUs when ``jobs`` is None) and shut it down at the
        end. ``"auto"`` or ``"HOST:PORT"``: join that cluster.
    jobs : int, optional
        At most this many tasks in flight (default: as many as the cluster's CPUs and GPUs hold).
    cpus_per_task, gpus_per_task : float
        Ray resources each task reserves; a GPU fraction (0.5) shares one GPU between tasks.
    max_retries : int
        Retries of a task whose worker died (0: none).
    on_done : callable, optional
        Called in the calling process with each :class:`TaskOutcome` as it finishes.

    Returns
    -------
    list of TaskOutcome
        ``outcomes[i].index == i``.

    Raises
    ------
    ConfigError
        Ray is missing, the cluster cannot be reached, an argument is out of range, or the
        cluster has fewer CPUs or GPUs than one task asks for.
    """
    if jobs is not None and jobs < 1:
        raise ConfigError(f"jobs must be ≥ 1, got {jobs}")
    if cpus_per_task < 0 or gpus_per_task < 0 or (cpus_per_task == 0 and gpus_per_task == 0):
        raise ConfigError(
            f"a task needs CPUs or GPUs: got cpus_per_task={cpus_per_task}, "
            f"gpus_per_task={gpus_per_task}"
        )
    if max_retries < 0:
        raise ConfigError(f"max_retries must be ≥ 0, got {max_retries}")
    if not items:
        return []
    ray = _import_ray()
    local_cpus = None
    if jobs is not None:
        local_cpus = max(1, int(jobs * max(cpus_per_task, 1)))
    started = start_ray(ray_address, num_cpus=local_cpus)
    try:
        return _run(ray, fn, items, jobs, cpus_per_task, gpus_per_task, max_retries, on_done)
    finally:
        if started:
            ray.shutdown()


def _run(
    ray: Any,
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    jobs: int | None,
    cpus_per_task: float,
    gpus_per_task: float,
    max_retries: int,
    on_done: Callable[[TaskOutcome], None] | None,
) -> list[TaskOutcome]:
    # a task no node can hold would wait for ever: say so instead
    res = ray.cluster_resources()
    for name, need in (("CPU", cpus_per_task), ("GPU", gpus_per_task)):
        if need > res.get(name, 0):
            raise ConfigError(
                f"each task asks for {need:g} {name}s but the Ray cluster has {res.get(name, 0):g}"
            )
    remote = ray.remote(_attempt).options(
        num_cpus=cpus_per_task,
        num_gpus=gpus_per_task,
        max_retries=max_retries,
        retry_exceptions=False,  # _attempt catches fn's exceptions; only deaths reach Ray
    )
    window = jobs or _capacity(ray, cpus_per_task, gpus_per_task)
    fn_ref = ray.put(fn)  # pickled once, not once per task
    outcomes: list[TaskOutcome | None] = [None] * len(items)
    pending: dict[Any, tuple[int, float]] = {}
    next_item = 0
    while next_item < len(items) or pending:
        # keep `window` tasks in flight so that "in flight" means "running", not "queued"
        while next_item < len(items) and len(pending) < window:
            pending[remote.remote(fn_ref, items[next_item])] = (next_item, time.perf_counter())
            next_item += 1
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=None)
        for ref in ready:
            index, t0 = pending.pop(ref)
            try:
                ok, value, error, seconds = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the worker died more than max_retries times
                ok, value, seconds = False, None, time.perf_counter() - t0
                error = _death_line(exc, max_retries)
            outcome = TaskOutcome(index, ok, value, error, seconds)
            outcomes[index] = outcome
            if on_done is not None:
                on_done(outcome)
    return [o for o in outcomes if o is not None]


def _death_line(exc: BaseException, max_retries: int) -> str:
    """One line for a task that Ray gave up on."""
    first = (str(exc).strip().splitlines() or [""])[0]
    kind = type(exc).__name__
    return f"worker died ({kind}, {max_retries + 1} attempts): {first}"[:300]


# -- mridip batch ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchConfig:
    """How every slice of a batch is reconstructed (the flags of ``mridip recon``).

    A slice whose output folder holds a result of the same configuration (and the same raw
    file: path, size, modification time) is skipped on a rerun.

    Attributes
    ----------
    method : str
        A key of :data:`mridip.methods.METHODS`.
    group, spokes_per_frame, time_dim, coils, maps
        As :func:`mridip.pipeline.prepare_slice`.
    device : str
        ``auto`` (default: the GPU Ray gave the task, else the CPU), ``cpu`` or ``cuda``.
    seed, iters, options
        As :func:`mridip.methods.reconstruct`.
    formats : tuple of str
        Outputs of each slice, as ``mridip recon --formats`` (default ``h5`` and ``gif``).
    """

    method: str = "cgsense"
    group: str | None = None
    spokes_per_frame: int | None = None
    time_dim: str | None = None
    coils: int | None = None
    maps: str = "auto"
    device: str = "auto"
    seed: int = 0
    iters: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    formats: tuple[str, ...] = ("h5", "gif")


@dataclass
class BatchReport:
    """What a batch run did: one row per slice (or per file that could not be surveyed).

    Attributes
    ----------
    rows : list of dict
        ``scan``, ``slice`` (None for a file that failed before its slices were known),
        ``raw``, ``status`` (``ok``, ``skipped``: complete from an earlier run, ``failed``),
        ``seconds`` (wall time of the task), ``cpu_seconds`` (CPU time of its worker process),
        ``method``, ``device``, ``error`` (one line or
        None), ``output`` (the slice's folder).
    seconds : float
        Wall time of the whole run.
    path : Path
        Where the report was written (``OUT/batch.json``).
    """

    rows: list[dict[str, Any]]
    seconds: float
    path: Path

    def count(self, status: str) -> int:
        """Rows with this status."""
        return sum(r["status"] == status for r in self.rows)

    @property
    def exit_code(self) -> int:
        """0 when every slice succeeded (now or before), 1 when some failed."""
        return 1 if self.count("failed") else 0

    def table(self) -> str:
        """The summary: one line per slice, then the counts."""
        head = (
            f"{'scan':20s} {'slice':>5s} {'status':8s} {'seconds':>8s} {'method':8s} {'device':7s}"
        )
        lines = [head + " error"]
        for r in self.rows:
            sl = "-" if r["slice"] is None else str(r["slice"])
            sec = "" if r["seconds"] is None else f"{r['seconds']:.2f}"
            lines.append(
                f"{r['scan'][:20]:20s} {sl:>5s} {r['status']:8s} {sec:>8s} "
                f"{r['method']:8s} {r['device'] or '':7s} {r['error'] or ''}".rstrip()
            )
        lines.append(self.summary())
        return "\n".join(lines)

    def summary(self) -> str:
        """One line: how many slices ended how, and where the report is."""
        n = len(self.rows)
        return (
            f"{n} slice{'s' if n != 1 else ''}: {self.count('ok')} done, "
            f"{self.count('skipped')} skipped (complete), {self.count('failed')} failed "
            f"in {self.seconds:.1f} s; report {self.path}"
        )


def _identity(raw: Path) -> dict[str, Any]:
    """What says that a raw file is still the one reconstructed before."""
    st = raw.stat()
    return {"raw": str(raw.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _slice_key(identity: dict[str, Any], slice_index: int, config: BatchConfig) -> str:
    text = json.dumps(
        {"file": identity, "slice": slice_index, "config": asdict(config)},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _complete(folder: Path, key: str) -> bool:
    """A slice's folder holds a finished result of this configuration."""
    try:
        record = json.loads((folder / "task.json").read_text())
    except (OSError, ValueError):
        return False
    return record.get("key") == key and (folder / "recon.h5").is_file()


def _scan_names(raws: Sequence[Path]) -> list[str]:
    """Output folder names: the file stems, made unique with a counter."""
    names: list[str] = []
    for raw in raws:
        base = raw.name[: -len(".h5")] if raw.name.endswith(".h5") else raw.stem
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _survey(spec: dict[str, Any]) -> list[int]:
    """Ray task: the slice indices of one raw file (its imaging readouts' slice counters)."""
    from mridip.io.raw import read_raw

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the slice tasks record the reader's warnings
        raw = read_raw(spec["raw"], group=spec["group"])
    return sorted({int(s) for s in raw.head["slice"].tolist()})


def _slice_task(spec: dict[str, Any]) -> dict[str, Any]:
    """Ray task: reconstruct one slice into a temporary folder, then rename it into place."""
    import torch

    from mridip.methods import resolve_device
    from mridip.pipeline import prepare_slice, reconstruct_slice

    cpu0 = time.process_time()  # CPU seconds of this worker process, all its threads
    torch.set_num_threads(spec["threads"])
    cfg: dict[str, Any] = spec["config"]
    final = Path(spec["output"])
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a worker that died
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            prep = prepare_slice(
                spec["raw"],
                group=cfg["group"],
                slice_index=spec["slice"],
                spokes_per_frame=cfg["spokes_per_frame"],
                time_dim=cfg["time_dim"],
                coils=cfg["coils"],
                maps=cfg["maps"],
                device=cfg["device"],
            )
            rec, config = reconstruct_slice(
                prep,
                tmp,
                method=cfg["method"],
                raw=spec["raw"],
                slice_index=spec["slice"],
                device=cfg["device"],
                seed=cfg["seed"],
                iters=cfg["iters"],
                options=dict(cfg["options"], progress=False),
                formats=tuple(cfg["formats"]),
            )
        device = str(resolve_device(cfg["device"]))
        notes = sorted({str(w.message).splitlines()[0] for w in caught})
        record = {
            "key": spec["key"],
            "raw": spec["raw"],
            "slice": spec["slice"],
            "method": cfg["method"],
            "device": device,
            "seconds": rec.seconds,
            "cpu_seconds": round(time.process_time() - cpu0, 3),
            "config": config,
            "warnings": notes,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / "task.json").write_text(json.dumps(record, indent=1, default=str))
        marker = spec.get("crash_once")
        if marker and not os.path.exists(marker):
            Path(marker).touch()
            os._exit(3)  # the test's lost worker: everything written, nothing renamed
        _swap_in(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {"device": device, "warnings": notes, "cpu_seconds": record["cpu_seconds"]}


def _swap_in(tmp: Path, final: Path) -> None:
    """Rename a finished folder into place; an older result is moved aside, then removed."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes folders private; results are not
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class _Progress:
    """One bar over the slices to run (a terminal), else one line per finished slice."""

    def __init__(self, total: int, window: int, stream: TextIO | None, bar: bool) -> None:
        self.total, self.window, self.stream = total, window, stream
        self.done = self.failed = 0
        self.bar = None
        if stream is not None and bar and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="slice", file=stream, dynamic_ncols=True)
            self._postfix()

    def _postfix(self) -> None:
        running = min(self.window, self.total - self.done - self.failed)
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"done={self.done} failed={self.failed} running={running}", refresh=True
            )

    def update(self, row: dict[str, Any]) -> None:
        if row["status"] == "failed":
            self.failed += 1
        else:
            self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            self._postfix()
        elif self.stream is not None:
            n = self.done + self.failed
            line = f"[{n}/{self.total}] {row['scan']} slice {row['slice']}: {row['status']}"
            line += f" ({row['error']})" if row["error"] else f" in {row['seconds']:.1f} s"
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_batch(
    raws: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    config: BatchConfig,
    *,
    ray_address: str | None = None,
    jobs: int | None = None,
    cpus_per_task: float = 1,
    gpus_per_task: float = 0,
    max_retries: int = 2,
    force: bool = False,
    progress: TextIO | None = None,
    bar: bool = False,
) -> BatchReport:
    """Reconstruct every slice of every raw file, one Ray task per slice; write ``OUT/batch.json``.

    ``OUT/<scan>/slice<NN>/`` receives what ``mridip recon`` writes (``recon.h5``,
    ``cine.gif``, ``montage.png``) plus ``task.json`` (configuration key, device, seconds,
    the reader's warnings). Each folder is written under a temporary name and renamed when
    complete, so it is complete or absent. A rerun skips the slices whose folder holds a
    result of the same configuration and raw file (``force`` redoes them) and retries the
    failed ones.

    Parameters
    ----------
    raws : sequence of paths
        ISMRMRD raw files; a file that cannot be read is recorded as failed, the rest go on.
    out : path
        Output folder.
    config : BatchConfig
        Method and options, the same for every slice.
    ray_address, jobs, cpus_per_task, gpus_per_task, max_retries
        As :func:`run_tasks`.
    force : bool
        Redo complete slices.
    progress : text stream, optional
        Where progress goes (None: nowhere).
    bar : bool
        A progress bar on ``progress`` (a terminal) instead of one line per slice.

    Returns
    -------
    BatchReport
        Its ``exit_code`` is 0 when every slice succeeded, 1 when some failed.

    Raises
    ------
    ConfigError
        No raw files, a file that does not exist, an unknown method, ``device="cuda"``
        without ``gpus_per_task``, a task larger than the cluster, Ray missing or unreachable.
    """
    from mridip import __version__
    from mridip.methods import METHODS, check_method_options

    t0 = time.perf_counter()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    paths = [Path(r) for r in raws]
    if not paths:
        raise ConfigError("no raw files given (RAW.h5 ... or --list FILE)")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ConfigError(f"no such raw file: {missing[0]}{more}")
    if config.method not in METHODS:
        raise ConfigError(f"unknown method {config.method!r}; available: {', '.join(METHODS)}")
    check_method_options(config.method, config.options)  # before any task starts
    if config.device.startswith("cuda") and gpus_per_task <= 0:  # Ray hides GPUs from the task
        raise ConfigError("--device cuda needs --gpus-per-task (a GPU share per task)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "batch.json"
    names = _scan_names(paths)
    idents = [_identity(p) for p in paths]

    # slices of each file: from the last report when the file is unchanged, else a survey task
    known: dict[str, list[int]] = {}
    try:
        previous = json.loads(report_path.read_text())
        for entry in previous.get("scans", {}).values():
            if entry.get("group") == config.group and "slices" in entry:
                known[json.dumps(entry["identity"], sort_keys=True)] = entry["slices"]
    except (OSError, ValueError, AttributeError):
        pass
    slices: dict[int, list[int]] = {}
    rows_failed_files: dict[int, dict[str, Any]] = {}
    to_survey = []
    for i, ident in enumerate(idents):
        cached = known.get(json.dumps(ident, sort_keys=True))
        if cached is not None and not force:
            slices[i] = cached
        else:
            to_survey.append(i)

    crash_once = os.environ.get(CRASH_ONCE_ENV) or None
    threads = max(1, int(cpus_per_task))
    specs: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    ray = None
    started_ray = False
    tasks_seconds = 0.0
    try:
        if to_survey:
            ray, started_ray = _ray_for(ray_address, jobs, cpus_per_task)
            surveys = run_tasks(
                _survey,
                [{"raw": str(paths[i]), "group": config.group} for i in to_survey],
                jobs=jobs,
                cpus_per_task=min(cpus_per_task, 1) or 1,
                max_retries=max_retries,
            )
            for i, o in zip(to_survey, surveys, strict=True):
                if o.ok:
                    slices[i] = list(o.value)
                else:
                    rows_failed_files[i] = _row(names[i], None, paths[i], out, config)
                    rows_failed_files[i].update(status="failed", error=o.error)
        for i, path in enumerate(paths):
            if i in rows_failed_files:
                rows.append(rows_failed_files[i])
                continue
            for s in slices[i]:
                row = _row(names[i], s, path, out, config)
                key = _slice_key(idents[i], s, config)
                if not force and _complete(Path(row["output"]), key):
                    row.update(status="skipped", device=_recorded_device(Path(row["output"])))
                else:
                    specs.append(
                        {
                            "row": len(rows),
                            "raw": str(path),
                            "slice": s,
                            "output": row["output"],
                            "key": key,
                            "config": asdict(config),
                            "threads": threads,
                            "crash_once": crash_once,
                        }
                    )
                rows.append(row)
        if specs:
            if ray is None:
                ray, started_ray = _ray_for(ray_address, jobs, cpus_per_task)
            window = jobs or _capacity(ray, cpus_per_task, gpus_per_task)
            meter = _Progress(len(specs), window, progress, bar)

            def finished(o: TaskOutcome) -> None:
                row = rows[specs[o.index]["row"]]
                row["seconds"] = round(o.seconds, 3)
                if o.ok:
                    row.update(
                        status="ok", device=o.value["device"], cpu_seconds=o.value["cpu_seconds"]
                    )
                else:
                    row.update(status="failed", error=o.error)
                meter.update(row)

            t_tasks = time.perf_counter()
            try:
                run_tasks(
                    _slice_task,
                    specs,
                    jobs=jobs,
                    cpus_per_task=cpus_per_task,
                    gpus_per_task=gpus_per_task,
                    max_retries=max_retries,
                    on_done=finished,
                )
            finally:
                meter.close()
                tasks_seconds = time.perf_counter() - t_tasks
        resources = ray.cluster_resources() if ray is not None else {}
    finally:
        if started_ray and ray is not None:
            ray.shutdown()
    report = BatchReport(rows, time.perf_counter() - t0, report_path)
    doc = {
        "mridip_version": __version__,
        "started": started_at,
        "seconds": round(report.seconds, 3),
        "tasks_seconds": round(tasks_seconds, 3),  # the slice tasks alone, without Ray's start
        "config": asdict(config),
        "ray": {
            "address": ray_address or "local",
            "resources": resources,
            "cpus_per_task": cpus_per_task,
            "gpus_per_task": gpus_per_task,
            "max_retries": max_retries,
        },
        "counts": {s: report.count(s) for s in ("ok", "skipped", "failed")},
        "scans": {
            names[i]: {
                "identity": idents[i],
                "group": config.group,
                **({"slices": slices[i]} if i in slices else {}),
            }
            for i in range(len(paths))
        },
        "slices": rows,
    }
    from mridip.io.atomic import atomic_path

    with atomic_path(report_path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, default=str))
    return report


def _row(scan: str, s: int | None, raw: Path, out: Path, config: BatchConfig) -> dict[str, Any]:
    folder = out / scan / (f"slice{s:02d}" if s is not None else "")
    return {
        "scan": scan,
        "slice": s,
        "raw": str(raw),
        "status": "pending",
        "seconds": None,
        "cpu_seconds": None,
        "method": config.method,
        "device": None,
        "error": None,
        "output": str(folder),
    }


def _recorded_device(folder: Path) -> str | None:
    try:
        return json.loads((folder / "task.json").read_text()).get("device")
    except (OSError, ValueError):
        return None


def _ray_for(address: str | None, jobs: int | None, cpus_per_task: float) -> tuple[Any, bool]:
    """Ray, started here (sized to ``jobs``) unless this process already runs it."""
    ray = _import_ray()
    cpus = max(1, int(jobs * max(cpus_per_task, 1))) if jobs is not None else None
    return ray, start_ray(address, num_cpus=cpus)
