"""What every command shares: JSON on stdout, confirmation and progress on a terminal.

With ``--json`` stdout holds exactly one JSON object (the result); prompts and
progress go to stderr so a script can parse stdout whatever happened.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import msgspec

__all__ = [
    "EXIT_LAYOUT",
    "EXIT_OK",
    "EXIT_PROBLEM",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "Progress",
    "confirm",
    "print_json",
]

EXIT_OK = 0
# a problem was found (drift, dead letters …) or the command did not do its work
EXIT_PROBLEM = 1
# bad arguments or configuration (argparse and common.config exit 2 themselves)
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
# OS_INDEX_NAME cannot be written through (common.index.IndexLayoutError)
EXIT_LAYOUT = 4


def print_json(value: object) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    sys.stdout.flush()


def confirm(lines: list[str], *, json_mode: bool) -> bool:
    """Print ``lines`` and ask "Proceed? [y/N]"; True only for y/yes.

    With ``json_mode`` the prompt goes to stderr (stdout holds only the result).
    End of input counts as no, so a script without ``--yes`` changes nothing.
    """
    out: TextIO = sys.stderr if json_mode else sys.stdout
    for line in lines:
        print(line, file=out)
    print("Proceed? [y/N] ", end="", file=out, flush=True)
    answer = sys.stdin.readline()
    if not sys.stdin.isatty():
        print(file=out)  # the answer did not echo: end the prompt's line
    return answer.strip().lower() in ("y", "yes")


class Progress:
    """A progress line on stderr for long work: ``<command>: <what> 1200/25000 (4.8%) 3.1s``.

    On a terminal the line is redrawn in place at most every 0.2 s; otherwise
    (a log file, CI) one line is printed per ``every`` seconds, so logs stay short.
    """

    def __init__(self, command: str, *, every: float = 5.0) -> None:
        self._command = command
        self._tty = sys.stderr.isatty()
        self._every = 0.2 if self._tty else every
        self._started = time.monotonic()
        self._last = 0.0
        self._open = False

    def note(self, line: str) -> None:
        """One line that stays (a step done)."""
        self._end_line()
        print(f"{self._command}: {line}", file=sys.stderr, flush=True)

    def update(
        self, what: str, done: int, total: int | None = None, *, force: bool = False
    ) -> None:
        now = time.monotonic()
        if not force and now - self._last < self._every:
            return
        self._last = now
        share = f" ({100.0 * done / total:.1f}%)" if total else ""
        of = f"/{total}" if total is not None else ""
        text = f"{self._command}: {what} {done}{of}{share} {now - self._started:.1f}s"
        if self._tty:
            print(f"\r\x1b[2K{text}", end="", file=sys.stderr, flush=True)
            self._open = True
        else:
            print(text, file=sys.stderr, flush=True)

    def done(self) -> None:
        self._end_line()

    def _end_line(self) -> None:
        if self._open:
            print(file=sys.stderr, flush=True)
            self._open = False
