"""Where the bench's operators run: `local` worker processes or `ray` tasks.

An engine takes a task, a module-level function `task(name, cfg) -> row`
that never raises for a failing operator (bench's `_evaluate_safely`), and
the names to run, and yields a `Finished` per name as each completes, in
completion order. The driver (bench.run) stores the rows; workers never touch
the store. A worker that dies (out of memory, killed) is a `Finished` with a
`failure` instead of a row; an interrupt (Ctrl-C) propagates after the
engine stopped its workers.

- `local`: today's ProcessPoolExecutor with `jobs` workers; a single job runs
  in this process (no workers to start).
- `ray`: each operator is a Ray task (`ray.remote`, one CPU each). Without an
  address Ray starts a new local instance with `num_cpus=jobs` (even when a
  cluster runs on this machine: `--address auto` is for that); with one it
  connects to that cluster (`ray.init(address=...)`, whose nodes need
  embedcsp installed) and the cluster's CPUs decide the parallelism. Ray is
  an optional extra (`pip install 'embedcsp[ray]'`), imported only here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from embedcsp.errors import BadInput

ENGINES = ("local", "ray")
RAY_HINT = "pip install 'embedcsp[ray]' (or pip install 'ray>=2.9')"


def ray_available() -> bool:
    """Whether Ray can be imported here, without importing it (that takes seconds)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules["ray"] is None (import blocked)
        return False


@dataclass(frozen=True)
class Finished:
    """One operator done: its row, or why its worker failed (then `row` is None)."""

    name: str
    row: dict | None
    failure: str | None = None


@dataclass(frozen=True)
class EngineSpec:
    """The `--engine` and `--address` options."""

    name: str = "local"
    address: str | None = None

    def check(self) -> None:
        """BadInput, before any work, for an unknown engine, an address without Ray, or Ray missing."""
        if self.name not in ENGINES:
            raise BadInput(f"unknown engine {self.name!r}: expected one of {', '.join(ENGINES)}")
        if self.address is not None and self.name != "ray":
            raise BadInput(f"--address is for --engine ray, not --engine {self.name}")
        if self.name == "ray" and not ray_available():
            raise BadInput(f"--engine ray needs Ray, which is not installed: {RAY_HINT}")

    def describe(self, jobs: int) -> str:
        if self.name == "local":
            return f"local, {jobs} job{'s' * (jobs != 1)}"
        return f"ray at {self.address}" if self.address else f"ray, local instance with {jobs} CPUs"


Task = Callable[..., dict]


def run_local(task: Task, names: list[str], cfg, jobs: int) -> Iterator[Finished]:
    """Worker processes via ProcessPoolExecutor; in this process for a single job."""
    jobs = min(jobs, len(names))
    if jobs <= 1:
        for name in names:
            yield Finished(name, task(name, cfg))
        return
    pool = ProcessPoolExecutor(max_workers=jobs)
    finished = False
    try:
        futures = {pool.submit(task, n, cfg): n for n in names}
        for fut in as_completed(futures):
            try:
                row = fut.result()
            except Exception as exc:  # noqa: BLE001 (a worker died, e.g. out of memory)
                yield Finished(futures[fut], None, f"{type(exc).__name__}: {exc}")
            else:
                yield Finished(futures[fut], row)
        finished = True
    finally:
        if not finished:  # interrupted (or the consumer stopped): do not wait for running operators
            # ProcessPoolExecutor has no public way to stop a running call; its processes do.
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.terminate()
        pool.shutdown(wait=finished, cancel_futures=True)


def start_ray(jobs: int, address: str | None):
    """Ray, initialized: a local instance with `jobs` CPUs, or connected to the cluster at `address`.
    Returns the module and whether this call started it (then the caller shuts it down)."""
    import logging

    try:
        import ray
    except ImportError:  # EngineSpec.check says so up front; this guards direct callers
        raise BadInput(f"--engine ray needs Ray, which is not installed: {RAY_HINT}") from None
    if ray.is_initialized():  # a caller's own Ray session: use it, leave it up
        return ray, False
    options = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False}
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(address="local", num_cpus=jobs, **options)  # a new instance, even if one runs here
    except Exception as exc:  # noqa: BLE001 (Ray raises ConnectionError, RuntimeError, ValueError...)
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        text = str(exc).strip()
        raise BadInput(f"--engine ray: cannot start or reach {where}: {type(exc).__name__}: "
                       f"{text.splitlines()[0] if text else ''}") from None
    return ray, True


def run_ray(task: Task, names: list[str], cfg, jobs: int, address: str | None) -> Iterator[Finished]:
    """Each name a Ray task (one CPU), results as they complete. Ray starts here, before the first
    result is asked for, so a failure to reach it is an error before any progress is shown."""
    ray, started = start_ray(jobs, address)
    return _ray_results(ray, started, task, names, cfg)


def _ray_results(ray, started: bool, task: Task, names: list[str], cfg) -> Iterator[Finished]:
    pending: dict = {}
    try:
        remote = ray.remote(num_cpus=1)(task)
        pending = {remote.remote(n, cfg): n for n in names}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                name = pending.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 (the task's worker died or the node was lost)
                    text = str(exc).strip()
                    yield Finished(name, None, f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}")
                else:
                    yield Finished(name, row)
    finally:
        for ref in pending:  # interrupted: nothing left running on the cluster
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def run_tasks(spec: EngineSpec, task: Task, names: list[str], cfg, jobs: int) -> Iterator[Finished]:
    """`task(name, cfg)` for every name on the engine `spec` names, as they finish."""
    spec.check()
    if not names:
        return iter(())
    if spec.name == "ray":
        return run_ray(task, names, cfg, jobs, spec.address)
    return run_local(task, names, cfg, jobs)
