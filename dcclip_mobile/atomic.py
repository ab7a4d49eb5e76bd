"""Atomic writes: a file or a whole directory appears complete or not at all.

Checkpoints and bundles are what users keep; an interrupted write (Ctrl-C, a full disk, kill -9, a crash)
must leave the previous version intact, never half of a new one.

A directory `X` is replaced in steps, each one rename (atomic on POSIX), beside `X` in its parent:

    1. write into `.X.tmp-<pid>-<random>`; give every file and directory in it the umask's usual mode;
       fsync every file
    2. if `X` exists: rename `X` -> `.X.old-<random>`          (the previous version, complete)
    3. rename `.X.tmp-...` -> `X`                                 (the new version, complete)
    4. rename `.X.old-...` -> `.X.trash-<random>`, then delete it

A crash at any instant leaves `X` whole (old or new), except between 2 and 3, where `X` is absent and the
previous version is `.X.old-*`, whole. `recover_directory(X)` finds it and renames it back; every write
starts with that recovery and then deletes what earlier crashes left (`.X.tmp-*` of dead processes,
`.X.old-*` once `X` exists, `.X.trash-*`). Files and directories get the permissions the process's umask
gives (as `open` and `mkdir` would: 0644 / 0755 under umask 022), not mkstemp's 0600, mkdtemp's 0700 or
what a library chose for a file it wrote inside (safetensors: 0600).
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import UsageError

TMP, OLD, TRASH = "tmp", "old", "trash"


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (/proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read-by-setting; restored at once
    os.umask(mask)
    return mask


def _usual_mode() -> int:
    """A new file's mode as `open` gives it: 0o666 less the umask."""
    return 0o666 & ~current_umask()


def _fsync_path(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    except OSError:
        return  # some filesystems refuse to open a directory for reading: nothing more to do there
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator:
    """A binary file to write `path` through: a temporary file beside it, fsynced and renamed over `path` when
    the block ends, removed if it raises, so `path` is always whole or absent (umask-derived permissions)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _usual_mode())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it (umask-derived permissions)."""
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def check_writable_dir(out: str | Path, flag: str, error: type[Exception] = UsageError) -> Path:
    """`out` is a directory this process can create files in, or can be made one (its nearest existing ancestor
    is such a directory): what a runner checks before it computes anything. Creates nothing that stays;
    `error(message naming flag and path)` otherwise."""
    out = Path(out)
    probe = out
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        where = "is a file" if probe == out else f"cannot be made: {str(probe)!r} is a file"
        raise error(f"{flag} {str(out)!r} {where}; give a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".write-test-"):
            pass
    except OSError as e:
        where = "" if probe == out else f" (in {str(probe)!r})"
        raise error(f"{flag} {str(out)!r} cannot be written{where}: {e.strerror or type(e).__name__}; give a "
                    "directory you can write to") from None
    return out


# --------------------------------------------------------------------------------------------- directories
def _sibling(final: Path, kind: str) -> Path:
    """A fresh name beside `final` for one of the steps' directories."""
    tag = f"{os.getpid()}-{secrets.token_hex(6)}" if kind == TMP else secrets.token_hex(8)
    return final.parent / f".{final.name}.{kind}-{tag}"


def _siblings(final: Path, kind: str) -> list[Path]:
    prefix = f".{final.name}.{kind}-"
    try:
        return sorted(p for p in final.parent.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


def _tmp_owner_alive(tmp: Path) -> bool:
    """Whether the process that is writing `tmp` (its pid is in the name) still runs on this machine."""
    m = re.match(r"\.(?:.*)\.tmp-(\d+)-[0-9a-f]+$", tmp.name)
    if m is None:
        return False  # a name from before pids were recorded: no writer can still own it
    pid = int(m.group(1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _old_content(old: Path) -> Path:
    """The previous version inside a `.X.old-*`: the directory itself, or (as versions before this layout
    left it) its one child named `x`."""
    children = list(old.iterdir())
    if len(children) == 1 and children[0].name == "x" and children[0].is_dir():
        return children[0]
    return old


def interrupted_swap(final: str | Path) -> Path | None:
    """Where the previous version of `final` lies when a replacement was interrupted between its two renames
    (`final` absent): the newest `.final.old-*` (its content), else None. Reads only."""
    final = Path(final)
    if final.exists():
        return None
    olds = [p for p in _siblings(final, OLD) if p.is_dir() and not p.is_symlink()]
    if not olds:
        return None
    newest = max(olds, key=lambda p: (p.stat().st_mtime_ns, p.name))
    return _old_content(newest)


def recover_directory(final: str | Path) -> Path | None:
    """`final` if it exists; else, when a replacement was interrupted between its renames, the previous
    version renamed back to `final` (or, where that rename is impossible, e.g. a read-only disk, the
    `.final.old-*` path itself); else None. What a resume calls before looking for its checkpoint."""
    final = Path(final)
    if final.exists():
        return final
    found = interrupted_swap(final)
    if found is None:
        return None
    try:
        os.rename(found, final)
    except OSError:
        return found
    if found.name == "x":  # the old layout: remove the now empty `.final.old-*` around it
        with contextlib.suppress(OSError):
            found.parent.rmdir()
    _fsync_path(final.parent, directory=True)
    return final


def clean_stale(final: str | Path) -> list[Path]:
    """Delete what interrupted writes of `final` left beside it: `.final.tmp-*` whose writer is gone,
    `.final.trash-*`, and `.final.old-*` once `final` exists (recover_directory first). Returns them."""
    final = Path(final)
    stale = [p for p in _siblings(final, TMP) if not _tmp_owner_alive(p)] + _siblings(final, TRASH)
    if final.exists():
        stale += _siblings(final, OLD)
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
    return stale


def _make_tmp(final: Path) -> Path:
    for _ in range(100):
        tmp = _sibling(final, TMP)
        try:
            tmp.mkdir()  # 0o777 & ~umask, as any mkdir (mkdtemp's 0700 would lock out a build step's user)
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"cannot create a temporary directory beside {str(final)!r}")


def _finish_tree(root: Path) -> None:
    """Before the swap: every file and directory under `root` gets the umask's usual mode (libraries such as
    safetensors create 0600 files; a bundle is for others to read), and every file is fsynced."""
    mask = current_umask()
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                os.chmod(p, (0o666 | (p.stat().st_mode & 0o111)) & ~mask)
                _fsync_path(p)
        os.chmod(dirpath, 0o777 & ~mask)
        _fsync_path(Path(dirpath), directory=True)


def _set_aside(final: Path) -> Path | None:
    """Step 2: rename the current `final` (if any) to `.final.old-*`; returns that path."""
    if not final.exists():
        return None
    old = _sibling(final, OLD)
    try:
        os.rename(final, old)
    except FileNotFoundError:  # gone meanwhile (another writer's swap): nothing to set aside
        return None
    return old


def _move_in(tmp: Path, final: Path) -> None:
    """Step 3: the new version takes `final`'s name."""
    os.rename(tmp, final)
    _fsync_path(final.parent, directory=True)


def _discard(old: Path | None, final: Path) -> None:
    """Step 4: the previous version, renamed out of recovery's sight first, then deleted."""
    if old is None:
        return
    trash = _sibling(final, TRASH)
    try:
        os.rename(old, trash)
    except FileNotFoundError:  # already cleaned up (another writer of the same directory)
        return
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(final: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside `final`; on success it replaces `final` whole.

    On an exception the temporary directory is removed and `final` is untouched. A crash at any instant
    leaves `final` (old or new) or, between the two renames, the previous version as `.final.old-*`,
    which `recover_directory(final)` and the next write put back (module docstring).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not final.is_dir():
        raise FileExistsError(f"{str(final)!r} is a file, not a directory; refusing to replace it")
    recover_directory(final)
    clean_stale(final)
    tmp = _make_tmp(final)
    try:
        yield tmp
        _finish_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = _set_aside(final)
    _move_in(tmp, final)
    _discard(old, final)
