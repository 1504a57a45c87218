"""Where bench cells run: in this process, in N local processes, or as Ray actors on a cluster.

A cell is a :class:`CellJob` (its config as a dict, its run directory, the thread count it
computes with) and comes back as a :class:`CellOutcome` (the run's summary, or the error that
stopped it). A :class:`CellWorker` runs cells one after another and keeps the task model it
loaded for the next cell with the same ``task_model`` section, so a grid over many agents loads
the model once per worker, not once per cell. The backends only decide where workers live:

* :func:`run_in_process` - one worker in this process (``--backend local``, the default);
* :func:`run_in_processes` - ``N`` worker processes of :mod:`concurrent.futures`
  (``--backend local --workers N``);
* :func:`run_on_ray` - one Ray actor per worker, each asking the bench file's ``num_cpus`` /
  ``num_gpus`` (``--backend ray [--address ADDR]``); without an address a local Ray starts.

Each cell computes with ``num_cpus`` torch threads whatever the backend, and every cell seeds
itself, so a grid gives the same results on every backend (tested).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlprompt.errors import RLPromptError, first_line


@dataclass
class CellJob:
    """One bench cell to run (everything a worker on another machine needs)."""

    key: str
    config: dict[str, Any]
    """The cell's run config (``config_to_dict``)."""
    cell_dir: str
    resume: bool
    threads: int
    """Torch threads of the cell (the bench's ``num_cpus``)."""
    cwd: str = field(default_factory=os.getcwd)
    """The driver's working directory: relative paths in the config start there."""
    progress: bool | None = False
    """Progress bar (``None``: on a terminal); only cells run in the driver's process show one."""


@dataclass
class CellOutcome:
    """What a worker reports for a cell."""

    key: str
    summary: str | None = None
    """``format_summary`` of the finished run (None if the cell failed)."""
    error: str | None = None
    """One line: why the cell stopped (None if it finished)."""
    loaded_model: bool = False
    """This cell loaded its task model (False: it reused the one its worker had)."""
    worker: str = ""
    """``host:pid`` of the worker that ran it."""
    wall_s: float = 0.0


class CellWorker:
    """Runs cells one after another, keeping the last task model it loaded for the next cell."""

    def __init__(self) -> None:
        self.loaded: dict[str, tuple[Any, Any, Any]] = {}

    def run(self, job: CellJob) -> CellOutcome:
        import json
        import socket

        import torch

        from rlprompt.bench import cell_task
        from rlprompt.config import config_from_dict, config_to_dict
        from rlprompt.experiment import run_experiment
        from rlprompt.reporting import format_summary

        started = time.perf_counter()
        worker = f"{socket.gethostname()}:{os.getpid()}"
        if os.getcwd() != job.cwd:
            os.chdir(job.cwd)
        torch.set_num_threads(job.threads)
        try:
            config = config_from_dict(job.config)
            loads = json.dumps(config_to_dict(config.task_model), sort_keys=True) not in self.loaded
            task = cell_task(config, self.loaded)
            result = run_experiment(config, job.cell_dir, resume=job.resume, progress=job.progress, task=task)
            return CellOutcome(job.key, format_summary(result, job.cell_dir), None, loads, worker,
                               round(time.perf_counter() - started, 2))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - a failed cell is reported; the other cells go on
            return CellOutcome(job.key, None, f"{type(exc).__name__}: {first_line(exc)}", False, worker,
                               round(time.perf_counter() - started, 2))  # fmt: skip


def run_in_process(jobs: Sequence[CellJob], worker: CellWorker | None = None) -> Iterator[CellOutcome]:
    """Every cell here, one after another, on one worker (models loaded once)."""
    worker = worker or CellWorker()
    for job in jobs:
        yield worker.run(job)


# ---------------------------------------------------------------- local processes

_PROCESS_WORKER: CellWorker | None = None  # the worker of a pool process (one per process, not the driver's)


def _start_process_worker() -> None:
    global _PROCESS_WORKER
    _PROCESS_WORKER = CellWorker()


def _run_in_worker_process(job: CellJob) -> CellOutcome:
    assert _PROCESS_WORKER is not None
    return _PROCESS_WORKER.run(job)


def run_in_processes(jobs: Sequence[CellJob], workers: int) -> Iterator[CellOutcome]:
    """Cells on ``workers`` local processes (spawned: no state inherited), as they finish."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_process_worker) as pool:
        futures = {pool.submit(_run_in_worker_process, job): job for job in jobs}
        while futures:
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            for future in done:
                job = futures.pop(future)
                try:
                    yield future.result()
                except BrokenProcessPool:
                    yield CellOutcome(job.key, error="its worker process died (killed, or out of memory)")


# ---------------------------------------------------------------- Ray


def run_on_ray(jobs: Sequence[CellJob], *, workers: int | None, address: str | None, num_cpus: float,
               num_gpus: float) -> Iterator[CellOutcome]:  # fmt: skip
    """Cells on Ray actors (one per worker, ``num_cpus``/``num_gpus`` each), as they finish. A
    worker that dies is replaced; its cell is reported failed. Without ``address`` a local Ray
    starts (with ``workers x num_cpus`` CPUs) and stops at the end."""
    try:
        import ray
    except ImportError:
        raise RLPromptError("--backend ray needs Ray: pip install ray") from None
    started_here = not ray.is_initialized()
    if started_here:
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address:
            options["address"] = address
        else:
            options["num_cpus"] = max(int(num_cpus * (workers or 1)), 1)
            options["num_gpus"] = int(num_gpus * (workers or 1))
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RLPromptError(f"cannot start or join Ray{f' at {address}' if address else ''}: {first_line(exc)}") from None
    try:
        total = ray.cluster_resources().get("CPU", 1.0)
        count = workers or max(int(total // max(num_cpus, 1e-9)), 1)
        count = max(1, min(count, len(jobs)))
        remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0)(CellWorker)
        actors = [remote.remote() for _ in range(count)]
        pending = deque(jobs)
        inflight: dict[Any, tuple[Any, CellJob]] = {}

        def dispatch(actor: Any) -> None:
            if pending:
                job = pending.popleft()
                inflight[actor.run.remote(job)] = (actor, job)

        for actor in actors:
            dispatch(actor)
        while inflight:
            done, _ = ray.wait(list(inflight), num_returns=1)
            actor, job = inflight.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except ray.exceptions.RayActorError as exc:
                outcome = CellOutcome(job.key, error=f"its Ray worker died: {first_line(exc)}")
                actor = remote.remote()
            except ray.exceptions.RayError as exc:
                outcome = CellOutcome(job.key, error=f"Ray: {first_line(exc)}")
            yield outcome
            dispatch(actor)
    finally:
        if started_here:
            ray.shutdown()
