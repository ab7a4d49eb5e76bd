"""The Android demo's non-UI Java code, tested on the JVM against vectors from the real Python code.

android_demo/run_jvm_tests.sh exports a tiny bundle with `python -m lowering.export`, writes extra vectors
with the project's tokenizer and preprocessing (`python -m lowering.golden`), compiles
android_demo/core with javac and runs its JUnit 4 tests. Needs a JDK 17 and Debian's junit4; without them
the tests are skipped (a failure instead where CI=true: see `needs` in conftest.py).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "android_demo" / "run_jvm_tests.sh"
GOLDEN = REPO / "android_demo" / "build" / "golden"
JUNIT = Path(os.environ.get("JUNIT_JAR", "/usr/share/java/junit4.jar"))


def _missing() -> str | None:
    if not shutil.which("javac") or not shutil.which("java"):
        return "no JDK (javac/java): apt-get install -y openjdk-17-jdk-headless"
    if not JUNIT.is_file():
        return f"no JUnit 4 at {JUNIT}: apt-get install -y junit4"
    return None


MISSING = _missing()
pytestmark = pytest.mark.needs(MISSING is None, f"the JVM tests cannot run: {MISSING}")


@pytest.fixture(scope="module")
def jvm_run() -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("GOLDEN_BUNDLE", "REUSE_GOLDEN")}
    return subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_jvm_tests_pass(jvm_run):
    out = jvm_run.stdout + jvm_run.stderr
    summary = re.findall(r"^(\d+) passed, (\d+) failed", out, re.M)
    assert jvm_run.returncode == 0 and summary, f"run_jvm_tests.sh exited {jvm_run.returncode}:\n{out[-6000:]}"
    passed, failed = map(int, summary[-1])
    assert failed == 0 and passed >= 30, out[-6000:]


@pytest.mark.slow
def test_java_benchmark_json_is_accepted_by_the_report(jvm_run):
    """The JSON the app's benchmark mode writes goes through lowering.report's own --device-json reader."""
    assert jvm_run.returncode == 0, (jvm_run.stdout + jvm_run.stderr)[-3000:]
    from lowering import report
    sample = GOLDEN / "device_report_sample.json"
    entries = report.read_device_entries(str(sample))
    manifest = json.loads((Path((GOLDEN / "bundle_path.txt").read_text().strip()) / "manifest.json").read_text())
    assert [e["name"] for e in entries] == [Path(a["file"]).stem for a in manifest["artifacts"]]
    for e in entries:
        assert set(e) == set(report.ENTRY_FIELDS)
        assert e["source"] == "device" and e["latency_ms_median"] == 2.5
        assert set(e["accuracy"]) == {"en", "zh"} and set(e["accuracy"]["en"]) == {"top1", "top5"}


@pytest.mark.slow
def test_java_path_rule_and_lone_surrogate_tests_ran_and_passed(jvm_run):
    """The Android core's path rule against crafted manifests (HostileBundleTest: ../../outside, /etc/passwd,
    unlisted files, symbolic links, golden images) and the lone-surrogate vectors are part of the JVM run."""
    out = jvm_run.stdout + jvm_run.stderr
    assert jvm_run.returncode == 0, out[-3000:]
    runner = (REPO / "android_demo" / "core" / "src" / "test" / "java" / "dcclip" / "core" / "RunAllTests.java")
    assert "HostileBundleTest.class" in runner.read_text()
    assert "FAILED" not in out, out[-3000:]
    cases = json.loads((GOLDEN / "cases.json").read_text(encoding="utf-8"))
    assert len(cases["tokenizer_surrogates"]) >= 8
    assert all("\ufffd" in c["normalized"] for c in cases["tokenizer_surrogates"] if c["utf16"] != [
        ord(ch) for ch in "ok "] + [0xD83D, 0xDE00] + [ord(ch) for ch in " pair"])
