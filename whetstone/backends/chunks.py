"""Run a back end on chunks of a batch, in parallel processes (:func:`run_chunks`).

The Loihi emulator and Nengo simulate on one core, one step after another. The contract's
neurons keep no state from one image to the next, so a batch splits into chunks: each
process builds the network once, runs its chunk (pipelined, as a single run does) and
:func:`join` puts the results back in input order. On ``p`` cores a long run takes about
``1/p`` of the time, plus one build per process.

The chunks' results equal a single run's: on Loihi too, the current empties every step
(see :mod:`whetstone.backends.loihi`), so no image depends on the one before it.

Processes are started with ``spawn`` (no fork of a process that runs threads), so a
script that calls :func:`run_chunks` must do so under ``if __name__ == "__main__":``, as
:mod:`multiprocessing` requires.

Example:
    >>> from whetstone.backends.chunks import run_chunks  # doctest: +SKIP
    >>> result = run_chunks("loihi", net, x_test, processes=2, target="sim")  # doctest: +SKIP
    >>> result.info["processes"]  # doctest: +SKIP
    2
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from whetstone.backends import BackendResult, compared, get

__all__ = ["join", "run_chunks"]


def run_chunks(
    name: str,
    net,
    x,
    processes: int = 2,
    *,
    compare_reference: bool = False,
    progress=None,
    **options,
) -> BackendResult:
    """``get(name).run(net, x, **options)`` on ``processes`` chunks of ``x`` at once.

    Args:
        name: a registered back end.
        net: the network.
        x: the batch; split into ``processes`` chunks of near-equal size (fewer where
            ``x`` has fewer images).
        processes: how many processes; 1 runs in this process.
        compare_reference: fill :attr:`BackendResult.agreement`, as ``run`` does.
        progress: called with the number of images done as chunks finish.
        options: the back end's ``run`` options.

    Returns:
        The joined result: ``build_seconds`` is the slowest chunk's build,
        ``run_seconds`` the rest of the wall time; ``info`` is the first chunk's, with
        ``processes`` and ``chunk_images``.
    """
    if not isinstance(processes, (int, np.integer)) or processes < 1:
        raise ValueError(f"run_chunks: processes must be a whole number >= 1, got {processes!r}.")
    backend = get(name)
    x = net.check_input(x, f"{name} run")
    parts = [part for part in np.array_split(np.arange(len(x)), processes) if len(part)]
    if len(parts) == 1:
        return backend.run(net, x, compare_reference=compare_reference, progress=progress,
                           **options)  # fmt: skip
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(parts), mp_context=context) as pool:
        futures = [pool.submit(_run, name, net, x[part], options) for part in parts]
        results, done = [], 0
        for future, part in zip(futures, parts, strict=True):
            results.append(future.result())  # in input order; re-raises a chunk's error
            done += len(part)
            if progress is not None:
                progress(done)
    wall = time.perf_counter() - started
    build = max(r.build_seconds for r in results)
    result = join(results, build_seconds=build, run_seconds=wall - build)
    result.info.update(processes=len(parts), chunk_images=[len(part) for part in parts])
    return compared(net, x, result) if compare_reference else result


def join(results: list[BackendResult], build_seconds=None, run_seconds=None) -> BackendResult:
    """One result from the results of consecutive chunks, in their order.

    Spike counts add up; ``info`` is the first chunk's; the seconds are the sums unless
    given.

    Example:
        >>> a = BackendResult(np.array([1]), np.ones((1, 2), np.uint8), np.array([2]),
        ...                   build_seconds=1.0, run_seconds=0.5)
        >>> b = BackendResult(np.array([0]), np.zeros((1, 2), np.uint8), np.array([0]),
        ...                   build_seconds=1.0, run_seconds=0.5)
        >>> joined = join([a, b])
        >>> joined.predictions.tolist(), joined.spike_counts.tolist(), joined.run_seconds
        ([1, 0], [2], 1.0)
    """
    return BackendResult(
        predictions=np.concatenate([r.predictions for r in results]),
        output_spikes=np.concatenate([r.output_spikes for r in results]),
        spike_counts=np.sum([r.spike_counts for r in results], axis=0),
        info=dict(results[0].info),
        build_seconds=sum(r.build_seconds for r in results)
        if build_seconds is None
        else build_seconds,
        run_seconds=sum(r.run_seconds for r in results) if run_seconds is None else run_seconds,
    )


def _run(name: str, net, x: np.ndarray, options: dict) -> BackendResult:
    """One chunk, in a worker process."""
    return get(name).run(net, x, **options)
