"""One way to time things: a thread setting that is put back, the median of repeated runs, and the
interleaved comparison that benchmarks and the report quote.

Why interleave: on a shared machine the same int8 .pte measured 2.6 ms and 6.6 ms an hour apart, when
artifacts were timed one after another. Timing them in turn, round after round, exposes every artifact to
the same drift, so their ratios hold even when the absolute times do not; the spread over rounds says how
far to trust each median.
"""
from __future__ import annotations

import contextlib
import statistics
import sys
import time
from typing import Callable, Iterator, Mapping, Sequence

import torch


# How many times threads() has resized ExecuTorch's pool. A loaded XNNPACK method keeps the pool it was
# made with, and a resize frees that pool: calling the method afterwards crashed the process (segfault,
# seen here when a runner made on 2 threads ran after a switch to 1). Runners reload when this moves.
_pool_resizes = 0


def executorch_pool_resizes() -> int:
    """How many times threads() has resized ExecuTorch's pool in this process (see PteRunner)."""
    return _pool_resizes


def _reset_executorch_pool(et, n: int) -> None:
    global _pool_resizes
    et._unsafe_reset_threadpool(n)
    _pool_resizes += 1


def _executorch_pool(load: bool):
    """ExecuTorch's runtime threadpool (its own, not torch's: XNNPACK .pte runs use it): the runtime module
    when it is loaded (or, with load=True, loadable) in this process, else None."""
    name = "executorch.extension.pybindings.portable_lib"
    if load and name not in sys.modules:
        try:
            import importlib
            importlib.import_module(name)
        except ImportError:
            return None
    return sys.modules.get(name)


@contextlib.contextmanager
def threads(n: int | None, executorch: bool = False) -> Iterator[None]:
    """torch's intra-op threads, and ExecuTorch's runtime threadpool (loaded first when executorch=True, for
    code about to run .pte files), set to n inside the block and restored after it (n None or 0: unchanged).
    Resizing ExecuTorch's pool invalidates methods loaded before it; lowering.executorch_backend.PteRunner
    reloads its program and method when that happened, so runners may be made and used on either side of the block."""
    if not n:
        yield
        return
    if n < 0:
        raise ValueError(f"threads must be >= 1 (or 0 for the current setting), got {n}")
    before = torch.get_num_threads()
    et = _executorch_pool(executorch)
    et_before = et._threadpool_get_thread_count() if et is not None else None
    torch.set_num_threads(n)
    # ExecuTorch offers no other way to size its pool, and each reset logs a line on stderr: only when needed
    if et is not None and et_before != n:
        _reset_executorch_pool(et, n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if et is not None and et_before != n:
            _reset_executorch_pool(et, et_before)


def run_times_ms(fn: Callable, args: Sequence = (), runs: int = 50, warmup: int = 5) -> list[float]:
    """Wall times of `runs` calls fn(*args) after `warmup` untimed ones, in milliseconds, in call order."""
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(*args)
        times.append((time.perf_counter() - t) * 1e3)
    return times


def median_ms(fn: Callable, args: Sequence = (), runs: int = 50, warmup: int = 5) -> float:
    """The median of run_times_ms."""
    return statistics.median(run_times_ms(fn, args, runs, warmup))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by the nearest rank of the sorted values."""
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def interleaved_ms(candidates: Mapping[str, tuple[Callable, Sequence]], rounds: int = 6, runs: int = 100,
                   warmup: int = 5) -> dict[str, dict]:
    """Each candidate (name -> (fn, args)) timed in turn, round after round: its median over all runs, the
    spread of its per-round medians (min, max), and every round's median. Ratios between candidates
    should be taken from one call of this."""
    per_round: dict[str, list[float]] = {name: [] for name in candidates}
    every: dict[str, list[float]] = {name: [] for name in candidates}
    for name, (fn, args) in candidates.items():
        run_times_ms(fn, args, runs=0, warmup=warmup)
    for _ in range(rounds):
        for name, (fn, args) in candidates.items():
            times = run_times_ms(fn, args, runs=runs, warmup=0)
            per_round[name].append(statistics.median(times))
            every[name].extend(times)
    return {name: {"median_ms": statistics.median(every[name]), "p90_ms": percentile(every[name], 0.9),
                   "round_medians_ms": per_round[name],
                   "spread_ms": [min(per_round[name]), max(per_round[name])]} for name in candidates}
