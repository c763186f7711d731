"""The run's own log: one timestamped line per step, to ``chaos.log`` and (unless
``--json-only``) to stdout, so a failure can be read next to the processes' logs."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

__all__ = ["Timeline"]


class Timeline:
    def __init__(self, path: Path, *, echo: bool) -> None:
        self.path = path
        self.echo = echo
        self.started = time.monotonic()
        self._file: TextIO = path.open("a", encoding="utf-8", buffering=1)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, message: str) -> None:
        now = time.time()  # one reading: the seconds and the milliseconds must agree
        wall = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
        line = f"[{wall} +{self.elapsed():6.1f}s] {message}"
        self._file.write(line + "\n")
        if self.echo:
            print(line, file=sys.stdout, flush=True)

    def close(self) -> None:
        self._file.close()
