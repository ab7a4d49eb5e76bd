"""dcclip_mobile/timing.py: the one timing method (issue 16 item 3, issue 19 item 1)."""
from __future__ import annotations

import time

import pytest
import torch

from dcclip_mobile.timing import interleaved_ms, median_ms, percentile, threads


def test_threads_sets_and_restores_even_on_error():
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with threads(target):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with threads(0):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be >= 1"):
        with threads(-1):
            pass


def test_median_and_interleaved_order_two_candidates_by_their_cost():
    fast, slow = (lambda: time.sleep(0.001)), (lambda: time.sleep(0.004))
    assert median_ms(slow, runs=5, warmup=1) > median_ms(fast, runs=5, warmup=1)
    r = interleaved_ms({"fast": (fast, ()), "slow": (slow, ())}, rounds=3, runs=4, warmup=1)
    assert set(r) == {"fast", "slow"}
    for v in r.values():
        assert len(v["round_medians_ms"]) == 3
        # the pooled median lies within the rounds' medians (equal-sized rounds)
        assert v["spread_ms"][0] - 1e-9 <= v["median_ms"] <= v["spread_ms"][1] + 1e-9
    assert r["slow"]["median_ms"] > r["fast"]["median_ms"] * 1.5
    assert percentile([5, 1, 3, 2, 4], 0.9) == 5 and percentile([5, 1, 3, 2, 4], 0.5) == 3


RESIZE_SCRIPT = """
import sys, torch
from dcclip_mobile.timing import threads, _executorch_pool
from lowering.executorch_backend import PteRunner
made_before = PteRunner(sys.argv[1])
x = torch.randn(64, 256)
expected = made_before(x)
before = _executorch_pool(True)._threadpool_get_thread_count()
with threads(1 if before != 1 else 2, executorch=True):
    inside = made_before(x)
    made_inside = PteRunner(sys.argv[1])
    made_inside(x)
after = made_before(x), made_inside(x)
print(max(float((y - expected).abs().max()) for y in (inside, *after)))
"""


def test_runners_survive_a_resized_executorch_pool(tmp_path):
    """A method loaded before threads() resized ExecuTorch's pool ran on the freed pool and crashed the process
    (segfault); PteRunner reloads it. In a subprocess, so a crash fails this test instead of the suite."""
    import subprocess
    import sys

    from lowering.executorch_backend import lower_to_pte

    torch.manual_seed(0)
    pte = tmp_path / "linear.pte"
    pte.write_bytes(lower_to_pte(torch.nn.Linear(256, 1024).eval(), (torch.zeros(64, 256),), "xnnpack").buffer)
    done = subprocess.run([sys.executable, "-c", RESIZE_SCRIPT, str(pte)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert float(done.stdout.strip().splitlines()[-1]) == 0.0
