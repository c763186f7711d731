"""A private one-node Redis Cluster: ``redis-server --cluster-enabled yes`` holding every
slot. Redis refuses a command or script whose keys are in two slots (CROSSSLOT) there
as on a real cluster, even with one node, so it proves a key layout cheaply (a few
hundred ms to start); the cluster devstack (devstack/up --cluster) is for failover."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from devstack.harness.services import PrivateRedis, free_port, wait_for

__all__ = ["OneNodeCluster", "one_node_cluster", "three_node_cluster"]


class OneNodeCluster(PrivateRedis):
    """PrivateRedis in cluster mode, no persistence; :meth:`start` assigns it every slot
    and waits (10 s at most) until ``cluster_state:ok``."""

    def __init__(self, *, every_slot: bool = True, node_timeout_ms: int = 15000) -> None:
        super().__init__(appendfsync="no")
        self.every_slot = every_slot  # False: a node that serves nothing until given slots
        self.node_timeout_ms = node_timeout_ms  # how long until a silent master fails over
        # the cluster bus port is explicit: the default, port + 10000, does not exist for
        # a free port above 55535 (Redis then refuses to start)
        self.bus_port = free_port()

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.directory / "nodes.conf"),
            "--cluster-port", str(self.bus_port),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--repl-diskless-sync-delay", "0",
            "--appendonly", "no",
            "--save", "",
            "--logfile", str(self.log_path()),
        ]  # fmt: skip

    def start(self) -> None:
        try:
            super().start()
        except AssertionError as error:
            log = self.log_path().read_text()[-2000:] if self.log_path().exists() else "no log"
            code = self.proc.poll() if self.proc is not None else None
            raise AssertionError(f"{error}; exit {code}; log: {log}") from None
        if not self.every_slot:
            return
        self.ask(b"CLUSTER ADDSLOTSRANGE 0 16383")
        wait_for(
            lambda: b"cluster_state:ok" in self.ask(b"CLUSTER INFO"),
            10,
            "the one-node cluster to serve every slot",
        )

    def ask(self, inline: bytes) -> bytes:
        """One inline command, its raw reply (up to 64 KiB)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(inline + b"\r\n")
            return sock.recv(65536)


@contextmanager
def one_node_cluster() -> Iterator[OneNodeCluster]:
    server = OneNodeCluster()
    server.start()
    try:
        yield server
    finally:
        server.close()


@contextmanager
def three_node_cluster(
    *, replicas: bool = False, node_timeout_ms: int = 15000
) -> Iterator[list[OneNodeCluster]]:
    """Three private masters sharing the 16384 slots in thirds, met and serving
    (cluster_state:ok on each): a few seconds. With ``replicas`` three more nodes, the
    i-th replicating the i-th master (servers[3 + i]), synced before this yields; a
    master silent for ``node_timeout_ms`` is then failed over to its replica."""
    count = 6 if replicas else 3
    servers = [
        OneNodeCluster(every_slot=False, node_timeout_ms=node_timeout_ms) for _ in range(count)
    ]
    try:
        for server in servers:
            server.start()
        ranges = ((0, 5460), (5461, 10922), (10923, 16383))
        for server, (low, high) in zip(servers, ranges, strict=False):
            server.ask(b"CLUSTER ADDSLOTSRANGE %d %d" % (low, high))
        for server in servers[1:]:
            servers[0].ask(b"CLUSTER MEET 127.0.0.1 %d %d" % (server.port, server.bus_port))
        known = b"cluster_known_nodes:%d" % count
        wait_for(
            lambda: all(
                b"cluster_state:ok" in s.ask(b"CLUSTER INFO") and known in s.ask(b"CLUSTER INFO")
                for s in servers
            ),
            30,
            f"{count} nodes to meet and serve every slot",
        )
        for master, replica in zip(servers[:3], servers[3:], strict=False):
            node_id = master.ask(b"CLUSTER MYID").split(b"\r\n")[1]
            replica.ask(b"CLUSTER REPLICATE " + node_id)
        for replica in servers[3:]:
            wait_for(
                lambda r=replica: b"master_link_status:up" in r.ask(b"INFO replication"),  # type: ignore[misc]
                30,
                "a replica to sync",
            )
        yield servers
    finally:
        for server in servers:
            server.close()
