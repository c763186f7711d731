"""The consumer as a process (``python -m searchsync.consumer.main``), for tests and benches.

Addresses of the shared services come from the environment (``source .devstack/env``),
falling back to reading ``.devstack/env`` itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

from devstack.env import require
from devstack.harness.services import wait_or_dump

__all__ = ["PYTHON", "ROOT", "ConsumerProcess", "service_env"]

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"


def service_env() -> dict[str, str]:
    """REDIS_URL, OS_HOST, OS_PORT from the environment or .devstack/env."""
    return require(("REDIS_URL", "OS_HOST", "OS_PORT"))


class ConsumerProcess:
    """A ``python -m searchsync.consumer.main`` subprocess with its log in a file."""

    def __init__(self, env: Mapping[str, str], name: str, log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(PYTHON), "-m", "searchsync.consumer.main"],
            cwd=ROOT,
            env={**os.environ, **env, "CONSUMER_NAME": name},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def pause(self) -> None:
        """SIGSTOP: the process freezes as in a long GC pause; its sockets stay open."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def wait(self, timeout: float) -> int:
        """The exit status; AssertionError with the log and every thread's stack
        (SIGUSR1, see consumer.main) if the process has not exited within ``timeout``."""
        try:
            return wait_or_dump(self.proc, timeout, self.log)
        finally:
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()
