"""bench/gpu_check.py is the command a GPU session runs: here it runs at test size on the CPU, so the script
itself is known to work before any device time is spent on it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_every_stage_at_tiny_size(tmp_path):
    # an empty asset cache: a GPU node reaches no registry, so the check must need none of the assets
    env = {**os.environ, "DCCLIP_CACHE": str(tmp_path / "no-assets")}
    r = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--out", str(tmp_path / "run"), "--tiny",
                        "--steps", "2", "--batch-size", "4"], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "gpu_check.json").read_text())
    assert set(report["stages"]) == {"stage1_online", "stage1_cache", "stage2_online"}
    for name, s in report["stages"].items():
        assert s["images_per_s"] > 0 and s["peak_mem_mb"] > 0, name
        assert s["projected_hours_per_million_pairs"] > 0, name
    assert report["stages"]["stage1_online"]["teacher_mode"] == "online"
    assert report["stages"]["stage1_cache"]["teacher_mode"] == "cache"
    assert 0 <= report["evaluate"]["top1"]["en"] <= 1
    assert "| stage1_online |" in r.stdout
