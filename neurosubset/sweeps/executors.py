"""Where points are computed: one :class:`concurrent.futures.Executor` path for this process, local worker
processes and dask.distributed.

:func:`point_executor` opens the executor (in-process for one worker, a forkserver ``ProcessPoolExecutor`` for
several, ``distributed.Client(...).get_executor()`` for a scheduler); :func:`completed` submits tasks to it and
yields each result as it finishes. dask is imported only when a scheduler is given.

Local workers never outlive the sweep: on Linux the forkserver gets SIGKILL when the process that started it dies
(``prctl(PR_SET_PDEATHSIG)``, set by :mod:`neurosubset.sweeps._lifeline`, which the forkserver preloads) and each
worker when the forkserver dies, so a SIGKILL or SIGTERM of the sweep takes its workers with it (the resource
tracker then sees its last writer go and exits). Workers ignore SIGINT: Ctrl-C reaches the sweep, which terminates
its workers at once and keeps every point already stored.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from typing import Any, TypeVar

from .._checks import MissingExtraError, ParameterError, check_workers, cores, max_workers  # noqa: F401

T = TypeVar("T")
R = TypeVar("R")
# what a forkserver imports once for all its workers (_lifeline first: the forkserver dies with its parent)
_PRELOAD = ["neurosubset.sweeps._lifeline", "neurosubset.sweeps.point"]
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; elsewhere nothing is done).

    Exits at once if the parent is already gone. The signal follows the parent *thread* that created this process.
    """
    if not sys.platform.startswith("linux"):  # pragma: no cover
        return
    import ctypes

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        return
    if os.getppid() != parent or parent == 1:  # the parent died before the request took effect
        os._exit(1)


def _worker_init() -> None:
    """Pool initializer: die with the forkserver (or the sweep, under spawn); leave Ctrl-C to the sweep."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _InProcess(Executor):
    """Runs each submitted call at once, in this process (one worker, nothing to share out)."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        fut: Future[R] = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # re-raised by fut.result(), as a pool would
            fut.set_exception(exc)
        return fut


@contextlib.contextmanager
def point_executor(workers: int, scheduler: Any, tasks: int) -> Iterator[tuple[Executor, int]]:
    """An executor for ``tasks`` points and how many tasks to keep submitted at once.

    Parameters
    ----------
    workers : int
        Local worker processes (1: compute in this process).
    scheduler : str, distributed.Client or None
        A dask.distributed scheduler address or client; overrides ``workers``.
    tasks : int
        Number of points to compute (no processes are started for one point or fewer).

    Yields
    ------
    (Executor, int)
        On exit, queued points are dropped and running ones left to end on their own.
    """
    if scheduler is not None:
        with _dask_executor(scheduler) as executor:
            yield executor, max(tasks, 1)
        return
    if workers == 1 or tasks <= 1:  # nothing to share out: no worker processes to start
        yield _InProcess(), 1  # one at a time: each point is stored before the next one is computed
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # forkserver: clean worker processes (no forked torch thread pools) that share one preloaded import
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(_PRELOAD)
    _quiet_resource_tracker()
    pool = ProcessPoolExecutor(max_workers=min(workers, tasks), mp_context=ctx, initializer=_worker_init)
    try:
        yield pool, tasks
    except BaseException:  # Ctrl-C or an error: stop the workers now (what was stored stays stored)
        _terminate(pool)
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


_TRACKER_QUIET = "ignore::UserWarning:multiprocessing.resource_tracker"


def _quiet_resource_tracker() -> None:
    """Start multiprocessing's resource tracker without its "There appear to be N leaked semaphore objects"
    warning: a SIGKILL of the sweep leaves the pool's queue semaphores registered, the tracker (a process of its own)
    unlinks them when it sees the sweep gone, and the warning only printed that it did so, after the shell prompt.
    The tracker reads its warning filters from the command line it is started with (``sys.warnoptions``); a
    tracker that already runs is left as it is."""
    from multiprocessing import resource_tracker

    if _TRACKER_QUIET in sys.warnoptions:
        resource_tracker.ensure_running()
        return
    sys.warnoptions.append(_TRACKER_QUIET)
    try:
        resource_tracker.ensure_running()
    finally:
        sys.warnoptions.remove(_TRACKER_QUIET)


def _terminate(pool: Any) -> None:
    """Terminate a ProcessPoolExecutor's worker processes (Python < 3.14 has no public call for it)."""
    for process in list(getattr(pool, "_processes", {}).values()):
        with contextlib.suppress(Exception):
            process.terminate()


_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")  # the address schemes dask.distributed connects by
_CONNECT_TIMEOUT = "5s"  # an unreachable scheduler is reported after this (a reachable one answers in milliseconds)


def check_scheduler(scheduler: Any) -> Any:
    """Refuse (one line, :class:`ParameterError`) a scheduler that is neither a ``distributed.Client`` nor an
    address ``scheme://host:port`` with a scheme dask.distributed knows (:data:`_SCHEMES`); nothing is contacted."""
    import re

    if scheduler is None or not isinstance(scheduler, str):
        if scheduler is not None and type(scheduler).__name__ != "Client":
            raise ParameterError(f"The 'scheduler' parameter must be an address such as 'tcp://host:8786' or a "
                                 f"distributed.Client. Got {scheduler!r}.")
        return scheduler
    scheme, sep, rest = scheduler.partition("://")
    ok = sep and scheme in _SCHEMES and (scheme == "inproc" or re.fullmatch(r"[^\s/:]+:\d+|\[[0-9a-fA-F:]+\]:\d+",
                                                                         rest))
    if not ok:
        raise ParameterError(f"The 'scheduler' parameter must be a dask scheduler address scheme://host:port with "
                             f"scheme one of {list(_SCHEMES)} (e.g. 'tcp://host:8786'). Got {scheduler!r} instead.")
    return scheduler


@contextlib.contextmanager
def _dask_executor(scheduler: Any) -> Iterator[Executor]:
    try:
        from distributed import Client
    except ImportError:
        raise MissingExtraError("scheduler=... needs dask.distributed: pip install 'neurosubset[distributed]'."
                                ) from None
    own = not isinstance(scheduler, Client)
    if own:
        check_scheduler(scheduler)
        try:
            client = Client(scheduler, timeout=_CONNECT_TIMEOUT)
        except (OSError, ValueError, TimeoutError) as exc:
            raise ParameterError(f"Cannot reach the dask scheduler at {scheduler!r} ({exc}). Start one with "
                                 f"'dask scheduler' and workers with 'dask worker {scheduler} --nthreads 1'.") from None
    else:
        client = scheduler
    executor = client.get_executor(pure=False)  # every point is its own task, even with equal arguments
    try:
        yield executor
    finally:
        executor.shutdown(wait=False)  # cancels what has not finished
        if own:
            client.close()


def completed(executor: Executor, fn: Callable[[T], R], tasks: Sequence[T], in_flight: int
              ) -> Iterator[tuple[T, R]]:
    """Yield ``(task, fn(task))`` as results finish, keeping ``in_flight`` tasks submitted.

    Results that finish together come in task order. A task's exception is raised when its result comes up.
    """
    futures: dict[Future, int] = {}
    queued = iter(range(len(tasks)))

    def top_up() -> None:
        for i in queued:
            futures[executor.submit(fn, tasks[i])] = i
            if len(futures) >= in_flight:
                return

    with _main_not_reimported():  # worker processes start during the first submits
        top_up()
    while futures:
        finished, _ = wait(futures, return_when=FIRST_COMPLETED)
        for fut in sorted(finished, key=futures.__getitem__):
            i = futures.pop(fut)
            yield tasks[i], fut.result()
        top_up()


@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
    """Hide the ``__main__`` script from multiprocessing while workers start.

    spawn / forkserver children re-run the parent's main script unless it is guarded by
    ``if __name__ == "__main__":``; a plain script calling ``sweep(..., workers=2)`` would then start the sweep again in
    every worker. The workers only need the point function and plain data, so they are started without it.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)

