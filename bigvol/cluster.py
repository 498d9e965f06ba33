"""Where the graphs run: the one place that decides compute placement.

``scheduler``:

- ``"threads"`` (default): dask's threaded scheduler in this process — a laptop, tests.
- ``"synchronous"``: one thread, for debugging.
- ``"processes"``: a ``distributed.LocalCluster`` of worker processes sized to the machine
  (or to ``workers`` / ``threads_per_worker`` / ``memory_limit``), with the dashboard.
- ``"slurm"`` / ``"pbs"``: Dask workers in batch jobs submitted with dask-jobqueue, the
  job shape from ``compute.jobqueue`` (:class:`~bigvol.config.JobQueueConfig`); the Dask
  scheduler runs in this process (on the login node or in the job that runs bigvol).
- an address (``tcp://host:8786``, ``host:8786``, ``tls://...``): an existing Dask cluster
  (``dask scheduler`` + ``dask worker``, Kubernetes alike).

The same stage code runs in all of them. GPU inference tasks carry the worker resource
``{"GPU": 1}`` (see :mod:`bigvol.segment.infer`); a LocalCluster gives that resource to its
workers when CUDA is present, and on a remote cluster start GPU workers with
``dask worker ADDRESS --resources GPU=1``.
"""

from __future__ import annotations

import contextlib
import logging
import os

import dask

from .errors import ConfigError

log = logging.getLogger(__name__)

LOCAL_SCHEDULERS = ("threads", "synchronous", "processes")
BATCH_SCHEDULERS = ("slurm", "pbs")


def _is_address(s: str) -> bool:
    return "://" in s or (":" in s and s.rsplit(":", 1)[-1].isdigit())


def validate_scheduler(scheduler: str) -> str:
    if scheduler in LOCAL_SCHEDULERS + BATCH_SCHEDULERS or _is_address(str(scheduler)):
        return scheduler
    raise ConfigError(
        f"compute.scheduler: {scheduler!r} is neither one of "
        f"{', '.join(LOCAL_SCHEDULERS + BATCH_SCHEDULERS)} nor a scheduler address like "
        "tcp://host:8786"
    )


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def worker_plan(*, workers=None, threads_per_worker=None, memory_limit=None, memory_budget=None):
    """Workers, threads per worker and per-worker memory for a LocalCluster on this machine.

    One thread per worker by default: the per-chunk libraries (cc3d, numba kernels, torch with its
    own threads) release the GIL but each chunk task is heavy, so processes with one thread
    give the most predictable memory. ``memory_budget`` (bytes or "48GB") is split evenly.
    """
    import psutil
    from dask.utils import parse_bytes

    cores = os.cpu_count() or 1
    threads = int(threads_per_worker or 1)
    n = int(workers or max(1, cores // threads))
    if memory_limit is None:
        budget = parse_bytes(memory_budget) if isinstance(memory_budget, str) else memory_budget
        total = budget or int(psutil.virtual_memory().total * 0.8)
        memory_limit = max(int(total // n), 512 * 2**20)
    return n, threads, memory_limit


def _walltime_seconds(walltime: str) -> int:
    """'HH:MM:SS', 'MM:SS', 'D-HH:MM:SS' or minutes -> seconds."""
    text = str(walltime).strip()
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:
        parts = [0, parts[0], 0]  # Slurm: a bare number is minutes
    while len(parts) < 3:
        parts.insert(0, 0)
    h, m, sec = parts
    return ((days * 24 + h) * 60 + m) * 60 + sec


def _job_shape(jobqueue):
    """``compute.jobqueue`` as a validated :class:`~bigvol.config.JobQueueConfig`."""
    from .config import JobQueueConfig

    return jobqueue if isinstance(jobqueue, JobQueueConfig) else JobQueueConfig(
        **(jobqueue or {}))


def batch_cluster(kind: str, jobqueue=None):
    """A dask-jobqueue ``SLURMCluster`` / ``PBSCluster`` shaped by ``compute.jobqueue``.

    No job is submitted yet (``cluster.scale`` / ``cluster.adapt`` does that);
    ``cluster.job_script()`` is the script each job runs.
    """
    if kind not in BATCH_SCHEDULERS:
        raise ConfigError(f"compute.scheduler: {kind!r} is not a batch scheduler "
                          f"({', '.join(BATCH_SCHEDULERS)})")
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigError(
            f"compute.scheduler: {kind} needs dask-jobqueue: pip install 'bigvol[hpc]'"
        ) from None
    jq = _job_shape(jobqueue)
    try:
        wall = _walltime_seconds(jq.walltime)
    except ValueError:
        raise ConfigError(f"compute.jobqueue.walltime: {jq.walltime!r} is not a time like "
                          "02:00:00") from None
    extra = list(jq.job_extra_directives)
    worker_args = []
    if wall > 15 * 60:
        # retire before the batch scheduler's kill: no chunk is lost half-written, and the
        # tasks move to the other workers (dask-jobqueue's advice for walltimes)
        worker_args += ["--lifetime", f"{(wall - 5 * 60) // 60}m", "--lifetime-stagger", "2m"]
    if jq.gpus:
        worker_args += ["--resources", f"GPU={jq.gpus}"]
    scheduler_options = {"dashboard_address": ":0"}
    if jq.interface:
        scheduler_options["interface"] = jq.interface
    kw = {
        "cores": jq.cores, "memory": jq.memory, "processes": jq.processes,
        "walltime": jq.walltime, "queue": jq.queue, "account": jq.account,
        "job_script_prologue": list(jq.job_script_prologue), "python": jq.python,
        "local_directory": jq.local_directory, "log_directory": jq.log_directory,
        "interface": jq.interface, "worker_extra_args": worker_args,
        "scheduler_options": scheduler_options,
    }
    if kind == "slurm":
        if jq.gpus:
            extra.append(f"--gres=gpu:{jq.gpus}")
        cls = dask_jobqueue.SLURMCluster
    else:
        from dask.utils import parse_bytes

        mem_gb = max(1, parse_bytes(jq.memory) // 10**9)
        spec = f"select=1:ncpus={jq.cores}:mem={mem_gb}GB"
        if jq.gpus:
            spec += f":ngpus={jq.gpus}"
        kw["resource_spec"] = spec
        cls = dask_jobqueue.PBSCluster
    kw["job_extra_directives"] = extra
    return cls(**{k: v for k, v in kw.items() if v is not None})


def job_script(kind: str, jobqueue=None) -> str:
    """The batch script one worker job runs (``bigvol run --dry-run``); submits nothing."""
    # the in-process scheduler's start-up chatter (distributed sets levels per logger)
    names = ["distributed", "distributed.scheduler", "distributed.http.proxy",
             "distributed.deploy", "dask_jobqueue"]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        cluster = batch_cluster(kind, jobqueue)
        try:
            return cluster.job_script()
        finally:
            cluster.close()
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


@contextlib.contextmanager
def compute_context(
    scheduler: str = "threads",
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit=None,
    memory_budget=None,
    jobqueue=None,
):
    """Run the enclosed dask computations on the chosen scheduler.

    Yields the ``distributed.Client`` for distributed schedulers, else None.

    Examples
    --------
    >>> with compute_context("threads", workers=2):                   # doctest: +SKIP
    ...     result.compute()
    """
    scheduler = validate_scheduler(scheduler)
    if scheduler in ("threads", "synchronous"):
        cfg = {"scheduler": scheduler}
        if workers:
            cfg["num_workers"] = int(workers)
        with dask.config.set(cfg):
            yield None
        return

    from distributed import Client, LocalCluster

    if scheduler == "processes":
        n, threads, mem = worker_plan(
            workers=workers, threads_per_worker=threads_per_worker,
            memory_limit=memory_limit, memory_budget=memory_budget,
        )
        resources = {"GPU": 1} if _cuda_available() else None
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=threads, memory_limit=mem,
            processes=True, resources=resources, dashboard_address=":0",
        )
        client = Client(cluster)
        log.warning(
            "dask dashboard: %s (%d workers x %d threads)", client.dashboard_link, n, threads
        )
        try:
            yield client
        finally:
            client.close()
            cluster.close()
        return

    if scheduler in BATCH_SCHEDULERS:
        jq = _job_shape(jobqueue)
        cluster = batch_cluster(scheduler, jq)
        if jq.adaptive:
            cluster.adapt(minimum_jobs=jq.adaptive[0], maximum_jobs=jq.adaptive[1])
        else:
            cluster.scale(jobs=jq.jobs)
        client = Client(cluster)
        log.warning("dask dashboard: %s (%s jobs of %d cores, %s)", client.dashboard_link,
                    f"{jq.adaptive[0]}-{jq.adaptive[1]}" if jq.adaptive else jq.jobs, jq.cores,
                    jq.memory)
        try:
            try:
                client.wait_for_workers(1, timeout=jq.startup_timeout)
            except TimeoutError:
                raise ConfigError(
                    f"compute.scheduler: {scheduler}: no worker job started within "
                    f"{jq.startup_timeout:g} s (see the queue with squeue / qstat, and the job "
                    f"logs in {jq.log_directory or 'the submission folder'})"
                ) from None
            yield client
        finally:
            client.close()
            cluster.close()
        return

    try:
        client = Client(scheduler, timeout="20s")
    except OSError as e:
        raise ConfigError(
            f"compute.scheduler: cannot reach the Dask scheduler at {scheduler}: {e}"
        ) from None
    log.warning("dask dashboard: %s", client.dashboard_link)
    try:
        yield client
    finally:
        client.close()
