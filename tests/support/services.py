"""Real services a test owns (free port, private redis-server, TCP proxy): in
devstack.harness.services, shared with bench/; re-exported here for the tests."""

from __future__ import annotations

from devstack.harness.services import (
    PrivateRedis,
    Proxy,
    free_port,
    stop_gracefully,
    wait_for,
    wait_or_dump,
)

__all__ = ["PrivateRedis", "Proxy", "free_port", "stop_gracefully", "wait_for", "wait_or_dump"]
