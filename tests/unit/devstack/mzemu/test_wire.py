"""Wire codec, output encoding, error texts and configuration of the emulator."""

from __future__ import annotations

import struct
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.adapt import Transformer
from psycopg.pq import Format

from devstack.mzemu import errors, wire
from devstack.mzemu.collection import Row
from devstack.mzemu.config import ConfigError, load_config
from devstack.mzemu.output import DATA, PROGRESS, UPSERT, OutputLayout, normalize_formats
from devstack.mzemu.session import _parse_options, _raw
from devstack.mzemu.values import BINARY_COPY_HEADER
from devstack.mzemu.wire import ColumnDesc


def split_messages(data: bytes) -> list[tuple[bytes, bytes]]:
    reader = wire.FrameReader()
    reader.feed(data)
    out = []
    while (msg := reader.next_message()) is not None:
        out.append(msg)
    return out


def decode_data_row(body: bytes) -> list[bytes | None]:
    (n,) = struct.unpack_from("!h", body, 0)
    pos = 2
    values: list[bytes | None] = []
    for _ in range(n):
        (length,) = struct.unpack_from("!i", body, pos)
        pos += 4
        if length < 0:
            values.append(None)
        else:
            values.append(body[pos : pos + length])
            pos += length
    return values


@given(st.lists(st.binary(max_size=40), max_size=6), st.integers(1, 7))
def test_frame_reader_reassembles_messages_fed_in_pieces(payloads: list[bytes], step: int) -> None:
    data = b"".join(wire.message(b"d", p) for p in payloads)
    reader = wire.FrameReader()
    got = []
    for i in range(0, len(data), step):
        reader.feed(data[i : i + step])
        while (msg := reader.next_message()) is not None:
            got.append(msg)
    assert got == [(b"d", p) for p in payloads]


def test_frame_reader_rejects_impossible_lengths() -> None:
    reader = wire.FrameReader()
    reader.feed(b"Q\x00\x00\x00\x02")
    with pytest.raises(errors.MzError):
        reader.next_message()


def test_startup_packets() -> None:
    body = struct.pack("!i", wire.PROTOCOL_V3) + b"user\0materialize\0database\0db\0\0"
    packet = wire.parse_startup(body)
    assert packet.params == {"user": "materialize", "database": "db"}
    cancel = wire.parse_startup(struct.pack("!iii", wire.CANCEL_REQUEST_CODE, 7, 99))
    assert (cancel.cancel_pid, cancel.cancel_secret) == (7, 99)
    assert (
        wire.parse_startup(struct.pack("!i", wire.SSL_REQUEST_CODE)).code == wire.SSL_REQUEST_CODE
    )


@given(
    st.text(max_size=5).filter(lambda s: "\0" not in s),
    st.lists(st.one_of(st.none(), st.binary(max_size=8)), max_size=4),
    st.lists(st.integers(0, 1), max_size=3),
)
def test_bind_round_trips_through_the_forwarding_encoder(
    portal: str, params: list[bytes | None], formats: list[int]
) -> None:
    bind = wire.Bind(portal, "s1", tuple(formats), tuple(params), tuple(formats))
    [(kind, body)] = split_messages(_raw(b"B", bind))
    assert kind == b"B" and wire.parse_bind(body) == bind
    parse = wire.Parse("s1", "SELECT $1", (20,))
    [(_, body)] = split_messages(_raw(b"P", parse))
    assert wire.parse_parse(body) == parse


def test_error_response_fields() -> None:
    err = errors.impossible_timestamp(5, 1795826786930, "u1")
    [(kind, body)] = split_messages(wire.error_response(err))
    fields = wire.parse_error_fields(body)
    assert kind == b"E"
    assert fields["S"] == fields["V"] == "ERROR"
    assert fields["C"] == "22000"
    assert fields["M"] == "could not find a valid timestamp for the query"
    assert fields["D"].startswith("Constraints:\nlower:\n  (StorageInput([u1])): [1795826786930 (")
    assert "(QueryAsOf): [            5 (1970-01-01 00:00:00.005)]" in fields["D"]


def test_materialize_texts() -> None:
    assert errors.subscribe_fell_behind(200 * 1024 * 1024, 128 * 1024 * 1024).message == (
        "SUBSCRIBE fell behind: the client did not read results fast enough, so its backlog "
        "reached 200.0 MiB, exceeding the 128.0 MiB budget"
    )
    assert errors.subscribe_fell_behind(10, 1000).message.endswith(
        "reached 10 B, exceeding the 1000 B budget"
    )
    assert errors.dependency_dropped("materialize.public.v").message == (
        'subscribe has been terminated because underlying relation "materialize.public.v" '
        "was dropped"
    )
    assert errors.absurd_subscribe_bounds(5, 4).sqlstate == "22000"
    assert errors.equal_subscribe_bounds(7).message == (
        "subscribe as of 7 (inclusive) up to the same bound 7 (exclusive) is guaranteed to be empty"
    )
    assert errors.idle_in_transaction_timeout().severity == "FATAL"


def test_output_layouts() -> None:
    rel = (ColumnDesc("id", 25), ColumnDesc("amount", 1700), ColumnDesc("note", 25))
    diffs = OutputLayout(rel, progress=True)
    assert [c.name for c in diffs.columns] == [
        "mz_timestamp",
        "mz_progressed",
        "mz_diff",
        "id",
        "amount",
        "note",
    ]
    upsert = OutputLayout(rel, progress=False, upsert_key=(2,))
    assert [c.name for c in upsert.columns] == ["mz_timestamp", "mz_state", "note", "id", "amount"]


def test_data_rows_in_text_and_binary() -> None:
    rel = (ColumnDesc("id", 25), ColumnDesc("amount", 1700))
    layout = OutputLayout(rel, progress=True)
    r = Row((b"order:1", b"12.50"))
    events = [(PROGRESS, 100), (DATA, 100, -1, r)]
    text = [
        decode_data_row(body)
        for _, body in split_messages(layout.data_rows(events, normalize_formats((), 5)))
    ]
    assert text == [[b"100", b"t", None, None, None], [b"100", b"f", b"-1", b"order:1", b"12.50"]]
    binary = split_messages(layout.data_rows(events, normalize_formats((1,), 5)))
    values = [v or b"" for v in decode_data_row(binary[1][1])]
    tx = Transformer()
    assert tx.get_loader(1700, Format.BINARY).load(values[0]) == Decimal(100)
    assert values[1] == b"\x00"
    assert tx.get_loader(20, Format.BINARY).load(values[2]) == -1
    assert tx.get_loader(1700, Format.BINARY).load(values[4]) == Decimal("12.50")
    mixed = split_messages(layout.data_rows(events[1:], (0, 1, 0, 0, 1)))
    assert decode_data_row(mixed[0][1])[:3] == [b"100", b"\x00", b"-1"]


def test_upsert_rows_and_copy_formats() -> None:
    rel = (ColumnDesc("id", 25), ColumnDesc("note", 25))
    layout = OutputLayout(rel, progress=False, upsert_key=(0,))
    events = [
        (UPSERT, 7, "delete", (b"k",), None),
        (UPSERT, 7, "upsert", (b"k",), Row((b"k", b"a\tb"))),
    ]
    rows = [decode_data_row(b) for _, b in split_messages(layout.data_rows(events, (0, 0, 0, 0)))]
    assert rows == [[b"7", b"delete", b"k", None], [b"7", b"upsert", b"k", b"a\tb"]]
    copy = [
        body
        for _, body in split_messages(layout.copy_messages(events, binary=False, with_header=False))
    ]
    assert copy == [b"7\tdelete\tk\t\\N\n", b"7\tupsert\tk\ta\\tb\n"]
    binary = [
        body
        for _, body in split_messages(layout.copy_messages(events, binary=True, with_header=True))
    ]
    assert binary[0].startswith(BINARY_COPY_HEADER + struct.pack("!h", 4))
    assert not binary[1].startswith(BINARY_COPY_HEADER)


def test_config_from_environment() -> None:
    config = load_config({"MZEMU_TICK_MS": "20", "MZEMU_PG_SCHEMA": "test_x"})
    assert (config.port, config.tick_ms, config.pg_schema) == (6875, 20, "test_x")
    assert config.max_buffered_bytes == 128 * 1024 * 1024
    with pytest.raises(ConfigError, match="MZEMU_TICK_MS"):
        load_config({"MZEMU_TICK_MS": "fast"})
    with pytest.raises(ConfigError, match="MZEMU_PG_SCHEMA"):
        load_config({"MZEMU_PG_SCHEMA": "x; drop"})


def test_startup_options() -> None:
    assert _parse_options("--cluster=serving") == [("cluster", "serving")]
    assert _parse_options("-c cluster=a -ccluster_replica=r1") == [
        ("cluster", "a"),
        ("cluster_replica", "r1"),
    ]
