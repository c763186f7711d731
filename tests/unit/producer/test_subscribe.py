"""producer/subscribe.py: the SUBSCRIBE and FETCH statements as Materialize documents them,
and the wait that reads ready data without an event-loop round trip (on a socketpair)."""

from __future__ import annotations

import contextlib
import logging
import socket

import psycopg
import pytest
from psycopg.abc import PQGen
from psycopg.waiting import Ready, Wait

from searchsync.producer.subscribe import (
    CURSOR,
    ReadyReadsConnection,
    connection_class,
    declare_statement,
    fetch_statement,
    read_while_ready,
    ready_reads_supported,
)


def test_declare_with_snapshot() -> None:
    text = declare_statement(
        "orders_search_source_mv",
        as_of=None,
        snapshot=True,
        envelope="diffs",
        key_column="order_id",
    ).as_string(None)
    assert text == (
        f'DECLARE "{CURSOR}" CURSOR FOR SUBSCRIBE (SELECT * FROM "orders_search_source_mv") '
        "WITH (PROGRESS, SNAPSHOT = true)"
    )


def test_declare_resume_upsert_envelope() -> None:
    text = declare_statement(
        "orders_search_source_mv",
        as_of=1699999999999,
        snapshot=False,
        envelope="upsert",
        key_column="order_id",
    ).as_string(None)
    assert text.endswith(
        'ENVELOPE UPSERT (KEY ("order_id")) WITH (PROGRESS, SNAPSHOT = false) AS OF 1699999999999'
    )


def test_fetch_has_a_count_and_no_timeout() -> None:
    assert fetch_statement(5000).as_string(None) == f'FETCH 5000 "{CURSOR}"'


def _reader(sock: socket.socket, want: int) -> PQGen[bytes]:
    """A generator like psycopg's: waits to read, then reads what is there (4 bytes)."""
    got = b""
    while len(got) < want:
        yield Wait.R
        with contextlib.suppress(BlockingIOError):
            got += sock.recv(4)
    return got


def _run(gen: PQGen[bytes]) -> tuple[list[Wait], bytes | None]:
    """Drive ``gen`` until it returns or asks to wait; (the waits it asked for, its result)."""
    waits: list[Wait] = []
    try:
        waits.append(next(gen))
    except StopIteration as done:
        return waits, done.value
    return waits, None


def test_reads_that_are_ready_need_no_event_loop() -> None:
    a, b = socket.socketpair()
    with a, b:
        b.setblocking(False)
        a.sendall(b"0123456789ab")
        assert _run(read_while_ready(_reader(b, 12), b.fileno())) == ([], b"0123456789ab")


def test_a_read_with_nothing_there_is_passed_to_the_caller() -> None:
    a, b = socket.socketpair()
    with a, b:
        b.setblocking(False)
        a.sendall(b"0123")
        gen = read_while_ready(_reader(b, 8), b.fileno())
        assert _run(gen) == ([Wait.R], None)  # read the first 4, then nothing is there
        a.sendall(b"4567")
        with pytest.raises(StopIteration) as done:
            gen.send(Ready.R)
        assert done.value.value == b"01234567"


def test_the_event_loop_gets_a_turn_once_the_budget_is_spent() -> None:
    a, b = socket.socketpair()
    with a, b:
        b.setblocking(False)
        a.sendall(b"01234567")
        assert _run(read_while_ready(_reader(b, 8), b.fileno(), budget=0.0)) == ([Wait.R], None)


def test_write_waits_are_passed_on() -> None:
    def writer() -> PQGen[bytes]:
        yield Wait.W
        return b"done"

    a, b = socket.socketpair()
    with a, b:
        gen = read_while_ready(writer(), b.fileno())
        assert _run(gen) == ([Wait.W], None)
        with pytest.raises(StopIteration):
            gen.send(Ready.W)


@pytest.mark.parametrize(
    ("version", "known"),
    [
        ("3.2.0", True),
        ("3.2.13", True),
        ("3.3.9", True),
        ("3.3.0.dev1", True),
        ("3.4.0", False),
        ("3.1.20", False),
        ("4.0", False),
        ("3", False),
        ("", False),
        ("x.y", False),
    ],
)
def test_ready_reads_are_used_only_on_the_psycopg_releases_read(version: str, known: bool) -> None:
    assert ready_reads_supported(version) is known


def test_an_unknown_psycopg_gets_the_plain_connection_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="searchsync.producer.subscribe"):
        assert connection_class("3.97.0") is psycopg.AsyncConnection
        assert connection_class("3.97.0") is psycopg.AsyncConnection
        assert connection_class("3.3.98") is ReadyReadsConnection
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("psycopg 3.97.0 is not a release the ready-read wait")
    assert "3.2, 3.3" in lines[0]
    assert lines[1] == "psycopg 3.3.98: FETCH results are read with ready reads"
