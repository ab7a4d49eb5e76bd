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
