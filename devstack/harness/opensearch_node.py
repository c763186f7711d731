"""A private OpenSearch node a test owns: start it, stop it, kill it, start it again.

The node is the devstack's (devstack/lib/opensearch.sh): the jars Maven resolved into
``.devstack/opensearch/classpath.txt``, launched by ``devstack/opensearch/Launcher.java``
as a single-file source program with the same JVM flags, but with its own data
directory, cluster name and free HTTP/transport ports, so a test may take it down
without disturbing the shared node on :9200. A restart reuses the data directory
(the same ports too), as a real node coming back would.

    node = OpenSearchNode(Path("/tmp/x"), heap="512m")
    node.start(); node.wait_healthy()
    node.stop()          # SIGTERM (the node closes cleanly), SIGKILL after a timeout
    node.start(); node.wait_healthy()
    node.kill()          # SIGKILL (a crash)
    node.close()
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from devstack.harness.services import free_port, stop_gracefully

__all__ = ["OpenSearchNode", "find_java", "node_classpath"]

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "devstack" / "opensearch"
CLASSPATH_FILE = ROOT / ".devstack" / "opensearch" / "classpath.txt"
_VERSION = re.compile(r'version "(\d+)')

# The stock 2.x jvm.options minus what only the tarball's bootstrap uses; the same list
# as devstack/lib/opensearch.sh, so the private node behaves like the devstack's.
_JVM_FLAGS = (
    "-Xss1m",
    "-XX:+UseG1GC",
    "-XX:-OmitStackTraceInFastThrow",
    "-Dfile.encoding=UTF-8",
    "-Djava.awt.headless=true",
    "-Djava.locale.providers=SPI,COMPAT",
    "-Dio.netty.noUnsafe=true",
    "-Dio.netty.noKeySetOptimization=true",
    "-Dio.netty.recycler.maxCapacityPerThread=0",
    "-Dopensearch.set.netty.runtime.available.processors=false",
    "-Dlog4j.shutdownHookEnabled=false",
    "-Dlog4j2.disable.jmx=true",
)


def _java_ok(java: str) -> bool:
    """A JDK 17..21 with the jdk.compiler module (the single-file launch compiles)."""
    try:
        version = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stderr
        modules = subprocess.run(
            [java, "--list-modules"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return False
    match = _VERSION.search(version)
    if match is None:
        return False
    return 17 <= int(match.group(1)) <= 21 and "jdk.compiler@" in modules


def find_java() -> str:
    """The java devstack/lib/opensearch.sh would pick; RuntimeError when there is none."""
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    if found := shutil.which("java"):
        candidates.append(found)
    candidates += sorted(str(p) for p in Path("/usr/lib/jvm").glob("java-17-openjdk-*/bin/java"))
    for java in candidates:
        if _java_ok(java):
            return java
    raise RuntimeError("no Java 17..21 JDK found (devstack/up installs one)")


def node_classpath() -> str:
    """The classpath the devstack resolved; RuntimeError if devstack/up never did."""
    if not CLASSPATH_FILE.is_file() or not CLASSPATH_FILE.read_text().strip():
        raise RuntimeError(f"{CLASSPATH_FILE} is missing: run devstack/up first")
    return CLASSPATH_FILE.read_text().strip()


class OpenSearchNode:
    """One single-node cluster in ``directory`` (home, data, logs, opensearch.log)."""

    def __init__(
        self,
        directory: Path,
        *,
        heap: str = "512m",
        cluster_name: str | None = None,
        java: str | None = None,
    ) -> None:
        self.directory = directory
        self.heap = heap
        self.port = free_port()
        self.transport_port = free_port()
        while self.transport_port == self.port:
            self.transport_port = free_port()
        self.cluster_name = cluster_name or f"searchsync-private-{self.port}"
        self.java = java or find_java()
        self.classpath = node_classpath()
        self.log_path = directory / "opensearch.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The java command line (devstack/lib/opensearch.sh's, with this node's settings)."""
        home = self.directory / "home"
        return [
            self.java,
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            *_JVM_FLAGS,
            f"-Dlog4j2.configurationFile={SOURCE / 'log4j2.properties'}",
            f"-Dsearchsync.os.path.logs={self.directory / 'logs'}",
            "-cp",
            self.classpath,
            str(SOURCE / "Launcher.java"),
            f"path.home={home}",
            f"path.data={self.directory / 'data'}",
            f"http.port={self.port}",
            f"transport.port={self.transport_port}",
            f"cluster.name={self.cluster_name}",
            f"node.name={self.cluster_name}-1",
            "network.host=127.0.0.1",
            "discovery.type=single-node",
            "cluster.routing.allocation.disk.threshold_enabled=false",
        ]

    def start(self) -> None:
        """Start the JVM (same ports and data as before); returns at once, see wait_healthy."""
        if self.running():
            raise RuntimeError(f"the node on {self.port} is already running")
        for sub in ("home", "data", "logs"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n==== {time.strftime('%H:%M:%S')} starting on {self.port}\n".encode())
            log.flush()
            # its own session: a Ctrl-C in the test's terminal must not reach the JVM
            # before the test has stopped the processes that write to it
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def health(self) -> str | None:
        """The cluster status (green, yellow, red), None when the node does not answer."""
        url = f"{self.url}/_cluster/health?wait_for_status=yellow&timeout=1s"
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                body = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None
        status = body.get("status")
        return str(status) if status else None

    def wait_healthy(self, timeout: float = 180.0) -> float:
        """Seconds until the cluster is yellow or green. RuntimeError with the log's tail
        if the JVM exits or the deadline passes."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if not self.running():
                raise RuntimeError(f"OpenSearch exited during start-up:\n{self.log_tail()}")
            if self.health() in ("yellow", "green"):
                return time.monotonic() - started
            time.sleep(0.25)
        raise RuntimeError(f"OpenSearch not healthy after {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (the launcher's shutdown hook closes the node), SIGKILL after ``timeout``."""
        if self.proc is None or not self.running():
            return
        stop_gracefully(self.proc, timeout, self.kill)

    def kill(self) -> None:
        """SIGKILL: a crash; what the node had acknowledged is in its translog."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self, remove: bool = False) -> None:
        """Stop the node; with ``remove``, delete its directory."""
        self.stop()
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)
