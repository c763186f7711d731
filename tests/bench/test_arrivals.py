"""bench.arrivals reads the emulator's messages as they pass: pure parsing, no services."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from bench.arrivals import ArrivalLog, ServerMessages, read_arrivals


def message(kind: bytes, payload: bytes) -> bytes:
    return kind + (len(payload) + 4).to_bytes(4, "big") + payload


def data_row(*columns: bytes | None) -> bytes:
    payload = len(columns).to_bytes(2, "big")
    for column in columns:
        if column is None:
            payload += (-1).to_bytes(4, "big", signed=True)
        else:
            payload += len(column).to_bytes(4, "big") + column
    return message(b"D", payload)


STREAM = b"".join(
    [
        message(b"R", (0).to_bytes(4, "big")),
        message(b"Z", b"I"),
        message(b"T", b"\x00\x01mz_timestamp\x00" + bytes(18)),
        data_row(b"1000", b"f", b"1", b"order-1"),
        data_row(b"1000", b"f", b"-1", b"order-2"),
        data_row(b"2000", b"t", None, None),  # progress: its timestamp arrives too
        data_row(None),
        data_row(b"3000.0", b"f", b"1", b"order-3"),
        message(b"C", b"FETCH 4\x00"),
    ]
)


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_each_timestamp_is_stamped_once_however_the_bytes_are_split(cuts: list[int]) -> None:
    out = io.StringIO()
    messages = ServerMessages(ArrivalLog(out))
    edges = [0, *sorted(cuts), len(STREAM)]
    for n, (start, end) in enumerate(itertools.pairwise(edges)):
        messages.feed(STREAM[start:end], float(n))
    lines = [line.split() for line in out.getvalue().splitlines()]
    assert [int(ts) for ts, _ in lines] == [1000, 2000, 3000]
    # stamped by the chunk that completed the row, never by an earlier one
    first_end = STREAM.index(data_row(b"1000", b"f", b"1", b"order-1")) + len(
        data_row(b"1000", b"f", b"1", b"order-1")
    )
    completing = next(n for n, end in enumerate(edges[1:]) if end >= first_end)
    assert float(lines[0][1]) == completing


def test_a_negotiation_answer_is_passed_over_and_tls_is_left_unread() -> None:
    out = io.StringIO()
    plain = ServerMessages(ArrivalLog(out))
    plain.skip = 1
    plain.feed(b"N" + data_row(b"5000", b"f", b"1", b"k"), 1.0)
    assert out.getvalue() == "5000 1.000000\n"
    tls = ServerMessages(ArrivalLog(io.StringIO()))
    tls.skip = 1
    tls.feed(b"S\x16\x03\x01", 1.0)
    assert tls.blind


def test_the_reader_leaves_a_half_written_line_for_the_next_call(tmp_path: Path) -> None:
    path = tmp_path / "arrivals.txt"
    path.write_text("1000 1.5\n2000 2.5\n30")
    seen: dict[int, float] = {}
    offset = read_arrivals(str(path), 0, seen)
    assert seen == {1000: 1.5, 2000: 2.5}
    path.write_text("1000 1.5\n2000 2.5\n3000 3.5\n")
    read_arrivals(str(path), offset, seen)
    assert seen[3000] == 3.5
