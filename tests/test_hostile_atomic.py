"""atomic_directory under real crashes: a child process kills itself (SIGKILL) at each point of the swap,
then the parent checks that the old or the new directory is in place, findable, and that the next write
cleans what the crash left. Permissions: what the umask gives, not mkdtemp's 0700 / mkstemp's 0600."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dcclip_mobile import atomic as A
from dcclip_mobile.atomic import atomic_directory, atomic_write_bytes, clean_stale, interrupted_swap, recover_directory

REPO = Path(__file__).resolve().parents[1]

# The child writes "old" into FINAL with atomic_directory, then "new" with a crash at POINT, by replacing one of
# atomic_directory's steps (the module's own functions, not the filesystem) with a SIGKILL of itself.
CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from dcclip_mobile import atomic as A

    final, point = Path(sys.argv[1]), sys.argv[2]

    def crash(*_):
        os.kill(os.getpid(), signal.SIGKILL)

    with A.atomic_directory(final) as d:
        (d / "version.txt").write_text("old")
        (d / "sub").mkdir()
        (d / "sub" / "weights.bin").write_bytes(b"o" * 1000)
    if point == "between_renames":
        A._move_in = crash
    elif point == "before_discard":
        A._discard = crash
    elif point == "during_discard":
        def half_discard(old, final):
            trash = A._sibling(final, A.TRASH)
            os.rename(old, trash)
            (trash / "version.txt").unlink()  # the delete got this far
            crash()
        A._discard = half_discard
    with A.atomic_directory(final) as d:
        (d / "version.txt").write_text("new")
        (d / "sub").mkdir()
        (d / "sub" / "weights.bin").write_bytes(b"n" * 1000)
        if point == "while_writing":
            crash()
    print("finished")
""")


def crash_at(final: Path, point: str) -> None:
    r = subprocess.run([sys.executable, "-c", CHILD, str(final), point], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stdout, r.stderr)


def siblings(final: Path) -> list[str]:
    return sorted(p.name for p in final.parent.iterdir() if p.name != final.name)


def version(d: Path) -> str:
    v = (d / "version.txt").read_text()
    assert (d / "sub" / "weights.bin").read_bytes() == v[0].encode() * 1000  # whole, never a mix
    return v


@pytest.mark.parametrize("point, survivor", [("while_writing", "old"), ("between_renames", "old"),
                                             ("before_discard", "new"), ("during_discard", "new")])
def test_atomic_directory_crash_at_each_point_leaves_old_or_new_and_the_next_write_cleans_up(tmp_path, point,
                                                                                             survivor):
    final = tmp_path / "checkpoint"
    crash_at(final, point)
    if point == "between_renames":
        # the one window where `final` is absent: the previous version is findable, whole, as .checkpoint.old-*
        assert not final.exists()
        found = interrupted_swap(final)
        assert found is not None and found.parent == tmp_path and found.name.startswith(".checkpoint.old-")
        assert version(found) == "old"
    else:
        assert version(final) == survivor
    assert siblings(final), "the crash left a temporary directory (this is what the next write must clean)"
    assert version(recover_directory(final)) == survivor
    assert final.is_dir()
    with atomic_directory(final) as d:
        (d / "version.txt").write_text("next")
        (d / "sub").mkdir()
        (d / "sub" / "weights.bin").write_bytes(b"n" * 1000)
    assert (final / "version.txt").read_text() == "next"
    assert siblings(final) == []


def test_atomic_directory_first_write_killed_leaves_nothing_findable_and_is_cleaned(tmp_path):
    final = tmp_path / "bundle"
    child = textwrap.dedent("""
        import os, signal, sys
        from pathlib import Path
        from dcclip_mobile.atomic import atomic_directory
        with atomic_directory(Path(sys.argv[1])) as d:
            (d / "a").write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    r = subprocess.run([sys.executable, "-c", child, str(final)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == -signal.SIGKILL
    assert not final.exists() and recover_directory(final) is None
    assert [n.startswith(".bundle.tmp-") for n in siblings(final)] == [True]
    with atomic_directory(final) as d:
        (d / "a").write_text("whole")
    assert siblings(final) == [] and (final / "a").read_text() == "whole"


def test_atomic_directory_recovers_the_layout_older_versions_left(tmp_path):
    """Before this layout, the swap moved the old directory to .X.old-*/x: a crash there is recovered too."""
    final = tmp_path / "checkpoint"
    legacy = tmp_path / ".checkpoint.old-abc123" / "x"
    legacy.mkdir(parents=True)
    (legacy / "version.txt").write_text("old")
    (tmp_path / ".checkpoint.tmp-k2j4h5").mkdir()  # mkdtemp's names of the old layout: no pid, so stale
    assert interrupted_swap(final) == legacy
    assert recover_directory(final) == final and (final / "version.txt").read_text() == "old"
    clean_stale(final)
    assert siblings(final) == []


def test_atomic_directory_leaves_a_live_writers_temporary_alone(tmp_path):
    final = tmp_path / "out"
    mine = A._make_tmp(final)  # this (live) process's pid is in its name
    assert clean_stale(final) == [] and mine.is_dir()


def test_atomic_directory_exception_inside_leaves_the_old_version_and_no_temporary(tmp_path):
    final = tmp_path / "d"
    with atomic_directory(final) as d:
        (d / "v").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(final) as d:
            (d / "v").write_text("new")
            raise KeyboardInterrupt
    assert (final / "v").read_text() == "old" and siblings(final) == []


def test_load_student_finds_the_checkpoint_an_interrupted_swap_set_aside(tiny_student, tiny_tokenizer, tmp_path):
    from dcclip_mobile.checkpoint import load_student, save_student

    final = save_student(tiny_student, tiny_tokenizer, tmp_path / "checkpoint")
    A._set_aside(final)  # the state a kill between the two renames leaves
    assert not final.exists()
    model, _ = load_student(final)
    assert final.is_dir() and model is not None


@pytest.fixture()
def umask():
    def set_(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    yield set_
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_permissions_of_atomic_directories_and_files_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    final = tmp_path / "bundle"
    with atomic_directory(final) as d:
        (d / "plain.txt").write_text("x")
        atomic_write_bytes(d / "atomic.bin", b"x")
    assert _mode(final) == 0o777 & ~mask
    assert _mode(final / "plain.txt") == 0o666 & ~mask
    assert _mode(final / "atomic.bin") == 0o666 & ~mask
    atomic_write_bytes(tmp_path / "replaced.bin", b"y")
    assert _mode(tmp_path / "replaced.bin") == 0o666 & ~mask


def test_permissions_of_a_saved_checkpoint_are_umask_derived(tiny_student, tiny_tokenizer, tmp_path, umask):
    from dcclip_mobile.checkpoint import save_student

    umask(0o022)
    d = save_student(tiny_student, tiny_tokenizer, tmp_path / "ckpt")
    assert _mode(d) == 0o755
    assert {p.name: _mode(p) for p in d.iterdir()} == {p.name: 0o644 for p in d.iterdir()}
