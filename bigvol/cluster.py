"""Where the graphs run: the one place that decides compute placement.

``scheduler``:

- ``"threads"`` (default): dask's threaded scheduler in this process — a laptop, tests.
- ``"synchronous"``: one thread, for debugging.
- ``"processes"``: a ``distributed.LocalCluster`` of worker processes sized to the machine
  (or to ``workers`` / ``threads_per_worker`` / ``memory_limit``), with the dashboard.
- an address (``tcp://host:8786``, ``host:8786``, ``tls://...``): an existing Dask cluster
  (``dask scheduler`` + ``dask worker``, dask-jobqueue, Kubernetes alike).

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


def _is_address(s: str) -> bool:
    return "://" in s or (":" in s and s.rsplit(":", 1)[-1].isdigit())


def validate_scheduler(scheduler: str) -> str:
    if scheduler in LOCAL_SCHEDULERS or _is_address(str(scheduler)):
        return scheduler
    raise ConfigError(
        f"compute.scheduler: {scheduler!r} is neither one of {', '.join(LOCAL_SCHEDULERS)} "
        "nor a scheduler address like tcp://host:8786"
    )


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def worker_plan(*, workers=None, threads_per_worker=None, memory_limit=None, memory_budget=None):
    """Workers, threads per worker and per-worker memory for a LocalCluster on this machine.

    One thread per worker by default: the per-chunk libraries (cc3d, edt, torch with its
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


@contextlib.contextmanager
def compute_context(
    scheduler: str = "threads",
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit=None,
    memory_budget=None,
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
