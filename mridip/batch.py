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

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mridip.errors import ConfigError

__all__ = ["TaskOutcome", "run_tasks"]


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
        None: a local instance sized to this machine (or ``num_cpus``/``num_gpus``);
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
    if address is None:
        # a small object store: tasks return small summaries, the images go to disk
        kwargs.update(num_cpus=num_cpus or os.cpu_count() or 1, object_store_memory=200 * 2**20)
        if num_gpus is not None:
            kwargs["num_gpus"] = num_gpus
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        target = "a local Ray instance" if address is None else f"Ray cluster at {address}"
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
        Ray is missing, the cluster cannot be reached, or an argument is out of range.
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
