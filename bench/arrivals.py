"""A pgwire tap in front of the emulator: when each timestamp's first row reached the producer.

    .venv/bin/python -m bench.arrivals --upstream HOST:PORT --out FILE [--port 0]

The pipeline-added latency (a row's arrival at the producer → its bulk acknowledged)
needs the arrival, which nothing records: Materialize's timestamp is when the view
changed, not when the row left it. bench.e2e points the producer at this tap instead
of the emulator. The tap forwards both directions unchanged, reads the server's
messages as they pass (pgwire: a type byte, a 4-byte length), and for every
``DataRow`` whose first column (``mz_timestamp``) it has not seen yet writes one line
``<ts> <epoch seconds>`` to ``--out``, stamped when the bytes were read, before they are
forwarded. Between this tap and the producer there is one loopback hop.

It prints ``listening on <port>`` once ready. A TLS session (the client's SSLRequest
answered ``S``) is forwarded but not read; the devstack's emulator speaks plain text.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from typing import IO

__all__ = ["ArrivalLog", "ServerMessages", "read_arrivals"]

_NEGOTIATIONS = {80877103, 80877104}  # SSLRequest, GSSENCRequest: answered by one byte


class ArrivalLog:
    """The first arrival of each timestamp, appended to a file (shared by connections)."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._seen: set[int] = set()

    def saw(self, ts: int, at: float) -> None:
        if ts not in self._seen:
            self._seen.add(ts)
            self._out.write(f"{ts} {at:.6f}\n")
            self._out.flush()


class ServerMessages:
    """Splits the server's byte stream into messages; reports each DataRow's first column."""

    def __init__(self, log: ArrivalLog) -> None:
        self._log = log
        self._buffer = bytearray()
        self.skip = 0  # bytes of a negotiation answer to pass over (no frame)
        self.blind = False  # TLS: nothing can be read any more

    def feed(self, chunk: bytes, at: float) -> None:
        if self.blind:
            return
        self._buffer += chunk
        buffer = self._buffer
        start = 0
        if self.skip and buffer:
            self.blind = buffer[0] == ord("S")
            start, self.skip = 1, 0
            if self.blind:
                buffer.clear()
                return
        while len(buffer) - start >= 5:
            length = int.from_bytes(buffer[start + 1 : start + 5], "big")
            end = start + 1 + length
            if len(buffer) < end:
                break
            if buffer[start] == ord("D") and length >= 10:
                size = int.from_bytes(buffer[start + 7 : start + 11], "big", signed=True)
                if size > 0:
                    text = bytes(buffer[start + 11 : start + 11 + size])
                    with contextlib.suppress(ValueError):
                        self._log.saw(int(text.split(b".")[0]), at)
            start = end
        del buffer[:start]


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    messages: ServerMessages | None,
    first: asyncio.Future[bytes] | None = None,
) -> None:
    try:
        while chunk := await reader.read(1 << 16):
            if messages is not None:
                messages.feed(chunk, time.time())
            if first is not None and not first.done():
                first.set_result(chunk)
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        if first is not None and not first.done():
            first.set_result(b"")
        writer.close()


async def _serve_one(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream: tuple[str, int],
    log: ArrivalLog,
) -> None:
    try:
        server_reader, server_writer = await asyncio.open_connection(*upstream)
    except OSError:
        client_writer.close()
        return
    messages = ServerMessages(log)
    first: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    to_server = asyncio.create_task(_pump(client_reader, server_writer, None, first))
    opening = await first
    if len(opening) >= 8 and int.from_bytes(opening[4:8], "big") in _NEGOTIATIONS:
        messages.skip = 1
    await asyncio.gather(to_server, _pump(server_reader, client_writer, messages))


async def serve(port: int, upstream: tuple[str, int], out: IO[str]) -> None:
    log = ArrivalLog(out)
    server = await asyncio.start_server(
        lambda r, w: _serve_one(r, w, upstream, log), "127.0.0.1", port
    )
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def read_arrivals(path: str, offset: int, into: dict[int, float]) -> int:
    """Adds the lines from byte ``offset`` on to ``into``; returns the new offset
    (a line still being written is left for the next call)."""
    with open(path, "rb") as file:
        file.seek(offset)
        data = file.read()
    complete = data.rfind(b"\n") + 1
    for line in data[:complete].splitlines():
        ts, at = line.split()
        into.setdefault(int(ts), float(at))
    return offset + complete


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.arrivals", description=__doc__)
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the emulator")
    parser.add_argument("--out", required=True, help="file the arrivals are appended to")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    with open(args.out, "a", encoding="ascii") as out, contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, (host, int(port)), out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
