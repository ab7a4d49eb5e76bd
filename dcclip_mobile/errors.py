"""The project's one error base, and the one main() rule every runner follows (`run_main`).

`DCClipError` means: the user's input or environment is wrong, and the message, one line, says what and what to
do. Every project error that means that inherits from it *and keeps its builtin base* (`ConfigError` is a
`DCClipError` and a `ValueError`), so code that catches `ValueError` or `FileNotFoundError` is unchanged. A bug
(an invariant broken inside the project) is never a `DCClipError`.

`run_main` turns these into `error: <message>` on one stderr line and exit 2. It also accepts, as bad input,
the builtin errors the library raises for bad input today:

- `ValueError`: the library's readers and checks raise it for a bad value, file or spec at about a hundred
  places. The price: a bug that raises `ValueError` also prints one line; set DCCLIP_TRACEBACK=1 to see its
  traceback.
- the `OSError`s that are about a path or the disk: `FileNotFoundError`, `NotADirectoryError`,
  `IsADirectoryError`, `PermissionError`, `FileExistsError`, and a full disk, an exceeded quota or a read-only
  file system. Any other `OSError` (an I/O error, a broken pipe) keeps its traceback.

Everything else (`RuntimeError`, `TypeError`, `KeyError`, ...) propagates with its traceback. Ctrl-C prints one
line, saying how to continue where the runner can (`--resume`), and exits 130.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import Callable


class DCClipError(Exception):
    """The user's input or environment is wrong; the message (one line) says what, and what to do."""


class UsageError(DCClipError, ValueError):
    """A command-line option's value is out of range, or options that do not combine."""


PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def is_input_error(e: BaseException) -> bool:
    """Whether run_main reports `e` as bad input (one line, exit 2) rather than as a bug (traceback)."""
    if isinstance(e, (DCClipError, ValueError, *PATH_ERRORS)):
        return True
    return isinstance(e, OSError) and e.errno in DISK_ERRNOS


def one_line(e: BaseException) -> str:
    """The error's message on one line."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    if len(lines) > 1 and lines[1].startswith("Original Traceback"):
        return lines[-1]  # re-raised from a DataLoader worker: its own message is the traceback's last line
    return " ".join(lines)


def run_main(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int | None],
             argv: list[str] | None = None, *, on_interrupt: str | None = None) -> int:
    """A runner's main(): parse `argv`, call `run(args)`, return its exit code (None: 0).

    Bad input (`is_input_error`) is `error: <message>` on one stderr line and exit 2; anything else raises with
    its traceback. Ctrl-C is one line and exit 130; `on_interrupt` says how to continue (default: --resume,
    when the parser has it)."""
    args = parser.parse_args(argv)
    try:
        code = run(args)
    except KeyboardInterrupt:
        if on_interrupt is None and getattr(args, "resume", None) is not None:
            on_interrupt = "continue from the last checkpoint with the same command and --resume"
        print("interrupted" + (f"; {on_interrupt}" if on_interrupt else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if not is_input_error(e) or os.environ.get("DCCLIP_TRACEBACK") == "1":
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0 if code is None else int(code)
