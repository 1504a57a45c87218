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

import math
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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
    command: str = ""
    """The bench command that queued the cell (the cell's lock file names it)."""


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


def model_key(config: Any) -> str:
    """What cells must share to share a loaded model: their whole ``task_model`` section."""
    import json

    from rlprompt.config import config_to_dict

    return json.dumps(config_to_dict(config.task_model), sort_keys=True)


def cell_task(config: Any, loaded: dict[str, tuple[Any, Any, Any]]) -> Any:
    """The cell's task, on the model, tokenizer and prefix key/value cache of an earlier cell
    with the same ``task_model`` section (models load once per bench). Sharing the prefix cache
    changes no result (a prefix's values do not depend on when it was computed); the score
    cache, which decides LM-call counts, stays each cell's own."""
    from rlprompt.experiment import seed_everything
    from rlprompt.task import Task

    key = model_key(config)
    seed_everything(config.seed)
    if key not in loaded:
        loaded.clear()  # cells run task by task: an earlier model is not needed again
        task = Task.from_config(config)
        tm = task.task_model
        loaded[key] = (getattr(tm, "model", None), getattr(tm, "tokenizer", None), getattr(tm, "prefix_cache", None))
        return task
    model, tokenizer, prefix_cache = loaded[key]
    task = Task.from_config(config, model=model, tokenizer=tokenizer)
    if prefix_cache is not None and hasattr(task.task_model, "prefix_cache"):
        task.task_model.prefix_cache = prefix_cache
    return task


class CellWorker:
    """Runs cells one after another, keeping the last task model it loaded for the next cell."""

    def __init__(self) -> None:
        self.loaded: dict[str, tuple[Any, Any, Any]] = {}

    def run(self, job: CellJob) -> CellOutcome:
        import socket

        import torch

        from rlprompt.config import config_from_dict
        from rlprompt.experiment import run_experiment
        from rlprompt.reporting import format_summary
        from rlprompt.rundir import BEST_PROMPT, CHECKPOINT

        started = time.perf_counter()
        worker = f"{socket.gethostname()}:{os.getpid()}"
        threads = torch.get_num_threads()
        try:
            if os.getcwd() != job.cwd:
                os.chdir(job.cwd)
            torch.set_num_threads(job.threads)
            config = config_from_dict(job.config)
            loads = model_key(config) not in self.loaded
            task = cell_task(config, self.loaded)
            # the cell's run directory is locked by run_experiment (one writer: a cell still running in a
            # worker of a killed driver is refused, not run a second time beside it); resume is decided
            # again here, as late as possible, in case the cell went on after the driver looked at it
            cell = Path(job.cell_dir)
            resume = job.resume or (cell / CHECKPOINT).is_file() or (cell / BEST_PROMPT).is_file()
            command = f"{job.command or 'rlprompt bench'} [cell {job.key}, worker {worker}]"
            result = run_experiment(
                config, job.cell_dir, resume=resume, progress=job.progress, task=task, command=command
            )
            return CellOutcome(
                job.key,
                format_summary(result, job.cell_dir),
                None,
                loads,
                worker,
                round(time.perf_counter() - started, 2),
            )
        except Exception as exc:  # noqa: BLE001 - a failed cell is reported; the other cells go on
            return CellOutcome(
                job.key,
                None,
                f"{type(exc).__name__}: {first_line(exc)}",
                False,
                worker,
                round(time.perf_counter() - started, 2),
            )
        finally:
            torch.set_num_threads(threads)


def run_in_process(jobs: Sequence[CellJob], worker: CellWorker | None = None) -> Iterator[CellOutcome]:
    """Every cell here, one after another, on one worker (models loaded once)."""
    worker = worker or CellWorker()
    for job in jobs:
        yield worker.run(job)


# ---------------------------------------------------------------- local processes

_PROCESS_WORKER: CellWorker | None = None  # the worker of a pool process (one per process, not the driver's)


def _start_process_worker(parent: int) -> None:
    """A pool process: its own worker; Ctrl-C is the driver's to handle; it exits if the driver dies."""
    global _PROCESS_WORKER
    import signal
    import threading

    _PROCESS_WORKER = CellWorker()
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)  # the driver is gone: stop instead of writing a cell it will run again

    threading.Thread(target=watch, daemon=True).start()


def _run_in_worker_process(job: CellJob) -> CellOutcome:
    assert _PROCESS_WORKER is not None
    return _PROCESS_WORKER.run(job)


def run_in_processes(jobs: Sequence[CellJob], workers: int) -> Iterator[CellOutcome]:
    """Cells on ``workers`` local processes (spawned: no state inherited), as they finish. If a
    worker dies (killed, out of memory) the pool is restarted and its unfinished cells are given
    one more try; a cell whose worker dies twice is reported failed."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")
    todo, tries = list(jobs), dict.fromkeys((job.key for job in jobs), 0)
    while todo:
        pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_start_process_worker, initargs=(os.getpid(),)
        )
        finished = False
        try:
            futures = {pool.submit(_run_in_worker_process, job): job for job in todo}
            todo = []
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    job = futures.pop(future)
                    try:
                        yield future.result()
                    except BrokenProcessPool:
                        tries[job.key] += 1
                        if tries[job.key] < 2:
                            todo.append(job)
                        else:
                            yield CellOutcome(job.key, error="its worker process died twice (killed, or out of memory)")
                    except Exception as exc:  # noqa: BLE001 - e.g. a result that could not be sent back
                        yield CellOutcome(job.key, error=f"{type(exc).__name__}: {first_line(exc)}")
            finished = True
        finally:
            if finished:
                pool.shutdown(wait=True)
            else:  # Ctrl-C or an error in the driver: queued cells are dropped, workers stopped
                processes = list((getattr(pool, "_processes", None) or {}).values())
                pool.shutdown(wait=False, cancel_futures=True)
                for process in processes:
                    process.terminate()


# ---------------------------------------------------------------- Ray


def run_on_ray(
    jobs: Sequence[CellJob], *, workers: int | None, address: str | None, num_cpus: float, num_gpus: float
) -> Iterator[CellOutcome]:
    """Cells on Ray actors (one per worker, ``num_cpus``/``num_gpus`` each), as they finish. A
    worker that dies is replaced; its cell is reported failed. Without ``address`` a local Ray
    starts (with ``workers x num_cpus`` CPUs) and stops at the end."""
    try:
        import ray
    except ImportError:
        raise RLPromptError("--backend ray needs Ray: pip install ray") from None
    started_here = not ray.is_initialized()
    if started_here:
        # without an address a fresh local Ray starts (never a cluster found by chance); it
        # detects the machine's CPUs and GPUs unless --workers sizes it
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
            "address": address or "local",
        }
        if not address and workers:
            options["num_cpus"] = max(math.ceil(num_cpus * workers), 1)
            options["num_gpus"] = math.ceil(num_gpus * workers)
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RLPromptError(
                f"cannot start or join Ray{f' at {address}' if address else ''}: {first_line(exc)}"
            ) from None
    try:
        resources = ray.cluster_resources()
        for name, wanted in (("CPU", num_cpus), ("GPU", num_gpus)):
            if wanted and resources.get(name, 0.0) < wanted:
                raise RLPromptError(
                    f"a bench cell asks for {wanted:g} {name}(s) (num_{name.lower()}s) but the Ray "
                    f"cluster has {resources.get(name, 0.0):g}"
                )
        count = workers or max(int(resources.get("CPU", 1.0) // num_cpus), 1)
        if num_gpus:
            count = min(count, max(int(resources.get("GPU", 0.0) // num_gpus), 1))
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
