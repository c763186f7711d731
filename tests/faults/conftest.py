"""Fixtures shared by the fault tests (real processes, real services)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import PrivateRedis


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis of the test's own that it may kill and restart; fsync always so a
    restart loses nothing the consumer was told was written."""
    server = PrivateRedis(tmp_path, appendfsync="always")
    server.start()
    yield server
    server.kill()
