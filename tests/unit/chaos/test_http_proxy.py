"""tests.support.http_proxy against a stdlib HTTP/1.1 server on loopback (no services).

What the chaos run relies on: requests and answers pass unchanged on kept-alive
connections (HEAD included, whose answer has a Content-Length and no body), the
401 mode answers on the same connection with the security plugin's body, and
switching back forwards again without the client reconnecting.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.http_proxy import UNAUTHORIZED_BODY, HttpProxy


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(json.dumps({"path": self.path}).encode())

    def do_HEAD(self) -> None:
        self._answer(b'{"exists": true}')

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self._answer(json.dumps({"got": self.rfile.read(length).decode()}).encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[HttpProxy]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    front = HttpProxy("127.0.0.1", server.server_address[1])
    front.start()
    try:
        yield front
    finally:
        front.close()
        server.shutdown()
        server.server_close()


def _request(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes, http.client.HTTPResponse]:
    conn.request(method, path, body=body)
    response = conn.getresponse()
    return response.status, response.read(), response


def test_forwards_on_one_kept_alive_connection(proxy: HttpProxy) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    assert _request(conn, "GET", "/a")[:2] == (200, b'{"path": "/a"}')
    sock = conn.sock
    assert _request(conn, "HEAD", "/b")[:2] == (200, b"")
    assert _request(conn, "POST", "/_bulk", b'{"x":1}\n')[:2] == (200, b'{"got": "{\\"x\\":1}\\n"}')
    assert conn.sock is sock, "the client had to reconnect"
    assert proxy.forwarded == 3
    conn.close()


def test_unauthorized_mode_answers_401_and_keeps_the_connection(proxy: HttpProxy) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    assert _request(conn, "GET", "/")[0] == 200
    sock = conn.sock
    proxy.set_unauthorized(True)
    status, body, response = _request(conn, "POST", "/_bulk", b"{}\n")
    assert status == 401
    assert body == UNAUTHORIZED_BODY
    assert json.loads(body)["error"]["type"] == "security_exception"
    assert response.getheader("WWW-Authenticate", "").startswith("Basic")
    assert _request(conn, "HEAD", "/orders")[:2] == (401, b"")
    proxy.set_unauthorized(False)
    assert _request(conn, "GET", "/again")[:2] == (200, b'{"path": "/again"}')
    assert conn.sock is sock, "the client had to reconnect"
    assert proxy.refused == 2
    conn.close()


def test_unreachable_node_closes_the_connection_without_an_answer() -> None:
    front = HttpProxy("127.0.0.1", 1)  # nothing listens on port 1
    front.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=5)
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            _request(conn, "GET", "/")
        conn.close()
    finally:
        front.close()
