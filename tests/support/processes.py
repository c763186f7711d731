"""Long-running processes a fault test starts, kills and restarts by name.

:class:`ManagedProcess` is one ``python -m <module>`` (a producer, a consumer, the
load generator) in its own session, so that a Ctrl-C in the test's terminal
reaches the test first and the test stops its processes in order. Every start
appends to the same log file after a ``==== start #N`` line, so one file tells a
replica's whole story across kills; every line the process writes is prefixed with
the wall-clock time it was read (searchsync's ``LOG_FORMAT=text`` has none), so
the log lines up with what the test did and when. :class:`DurableRedis` is the private
redis-server of tests.support.services with a graceful stop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from tests.support.services import PrivateRedis, stop_gracefully

__all__ = ["DurableRedis", "ManagedProcess", "kill_children"]

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"


def _stamp() -> str:
    now = time.time()  # one reading: the seconds and the milliseconds must agree
    return time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"


def _pump(stream: IO[bytes], path: Path) -> None:
    """Copy ``stream`` to ``path`` line by line, each line after its time of arrival."""
    with stream, path.open("ab") as log:
        for line in iter(stream.readline, b""):
            log.write(_stamp().encode() + b" " + line)
            log.flush()


class ManagedProcess:
    """``python -m module *args`` with ``env`` on top of os.environ, logging to ``log_path``."""

    def __init__(
        self,
        name: str,
        module: str,
        env: Mapping[str, str],
        log_path: Path,
        args: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.module = module
        self.env = dict(env)
        self.args = list(args)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._pumps: list[threading.Thread] = []

    def start(self) -> None:
        self.starts += 1
        self.note(f"start #{self.starts} of {self.name}")
        self.proc = subprocess.Popen(
            [str(PYTHON), "-m", self.module, *self.args],
            cwd=ROOT,
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        pump = threading.Thread(
            target=_pump, args=(self.proc.stdout, self.log_path), name=f"log-{self.name}"
        )
        pump.daemon = True  # a process that outlives the test must not keep it alive
        pump.start()
        self._pumps = [t for t in self._pumps if t.is_alive()] + [pump]

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def note(self, message: str) -> None:
        """A line of the test's own in this process's log (what was done to it)."""
        with self.log_path.open("ab") as log:
            log.write(f"==== {_stamp()} {message}\n".encode())

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.note("chaos: SIGKILL")
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
            self.flush_log()

    def terminate(self) -> None:
        """SIGTERM; see :meth:`wait`."""
        if self.proc is not None and self.proc.poll() is None:
            self.note("chaos: SIGTERM")
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if still running after ``timeout`` seconds."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def dump_stacks(self) -> None:
        """SIGUSR1: searchsync processes write every thread's and task's stack to the log."""
        if self.alive() and self.proc is not None:
            self.proc.send_signal(signal.SIGUSR1)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM; after ``timeout`` s, stacks to the log and SIGKILL to the process group.
        Returns the exit status (None if it had to be killed)."""
        if self.alive():
            self.terminate()
            if self.wait(timeout) is None:
                self.note(f"chaos: still running {timeout:g}s after SIGTERM; stacks, then SIGKILL")
                self.dump_stacks()
                time.sleep(1)
                self.ensure_dead()
                return None
        self.flush_log()
        return self.returncode()

    def ensure_dead(self) -> None:
        """SIGKILL the whole process group, whatever state it is in."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self.flush_log()

    def flush_log(self, timeout: float = 2.0) -> None:
        """Wait (briefly) until what a dead process wrote is in its log file."""
        for pump in self._pumps:
            pump.join(timeout)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _children(parent: int) -> list[int]:
    """Pids whose parent is ``parent`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append(int(entry.name))
    return found


def kill_children() -> list[int]:
    """SIGKILL every process this process started that is still running, by pid; returns
    them. The last line of a teardown: a helper interrupted half-way (Ctrl-C while a
    service was starting) may have started a process nobody holds a handle to."""
    killed = []
    for pid in _children(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    for pid in killed:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return killed


class DurableRedis(PrivateRedis):
    """A private redis-server with ``appendfsync always`` (a restart loses nothing it
    acknowledged) in a given directory, stopped gracefully by :meth:`shutdown`.

    Unlike PrivateRedis it runs in its own session (a Ctrl-C reaches the test, which
    stops its clients first) and :meth:`start` waits as long as loading the AOF takes
    (PrivateRedis allows 10 s: a long chaos run's streams take longer to load)."""

    def __init__(self, directory: Path, load_timeout: float = 300.0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(directory, appendfsync="always")
        self.load_timeout = load_timeout

    def start(self) -> None:
        """Start (or restart, on the same port and data); returns once it answers PING."""
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.load_timeout
        while not self._answers():  # PING answers -LOADING until the AOF is read
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not answering after {self.load_timeout:g}s")
            time.sleep(0.05)

    def shutdown(self, timeout: float = 30.0) -> None:
        """SIGTERM: redis-server fsyncs its AOF and exits (SHUTDOWN); SIGKILL after timeout."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        stop_gracefully(self.proc, timeout, self.kill)
        self.proc = None
