"""Slow and greedy clients against a real `ltfu serve` on loopback (finding M2): a connection that sends
nothing, trickles its headers or trickles its body is closed by the deadlines, and the connection cap
answers 503 rather than queueing without end."""

from __future__ import annotations

import base64
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.harness import wait_http
from tests.support.server import free_port

LTFU = str(Path(sys.executable).with_name("ltfu"))
ADMIN = ("admin", "admin-secret-slow-1")
DEADLINE_S = 1.0
PATIENCE_S = 8.0  # how long a test keeps trickling before it calls the connection held open


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    port = free_port()
    data = tmp_path_factory.mktemp("slow")
    env = {
        **os.environ,
        "LTFU_DATA_DIR": str(data),
        "LTFU_DATABASE_URL": f"sqlite:///{data / 'ltfu.db'}",
        "LTFU_PORT": str(port),
        "LTFU_ADMIN_PASSWORD": ADMIN[1],
        "LTFU_WORKERS": "false",
        "LTFU_HEADER_TIMEOUT_S": str(DEADLINE_S),
        "LTFU_BODY_TIMEOUT_S": str(DEADLINE_S),
        "LTFU_KEEP_ALIVE_S": "1",
        "LTFU_LIMIT_CONCURRENCY": "4",
    }
    proc = subprocess.Popen([LTFU, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _closed_by_server(sock: socket.socket, chunks: list[bytes], interval: float) -> tuple[bool, bytes]:
    """Send ``chunks`` one per ``interval`` (then keep waiting) until the server closes or PATIENCE_S passes."""
    received = b""
    end = time.monotonic() + PATIENCE_S
    pending = list(chunks)
    while time.monotonic() < end:
        if pending:
            try:
                sock.sendall(pending.pop(0))
            except OSError:  # reset by the server
                return True, received
        readable, _, _ = select.select([sock], [], [], interval)
        if readable:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return True, received
            if not data:
                return True, received
            received += data
    return False, received


def _connect(addr: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(addr, timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def test_a_silent_connection_is_closed(serve: tuple[str, int]) -> None:
    with _connect(serve) as sock:
        closed, got = _closed_by_server(sock, [], 0.2)
    assert closed and got == b""


def test_trickled_headers_are_cut_off(serve: tuple[str, int]) -> None:
    headers = [b"GET /health HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n"] + [b"X-Pad-%d: y\r\n" % i for i in range(40)]
    with _connect(serve) as sock:
        start = time.monotonic()
        closed, got = _closed_by_server(sock, headers, 0.25)
        took = time.monotonic() - start
    assert closed and got == b"", "headers still trickling after the deadline: the connection stayed open"
    assert took < PATIENCE_S


def test_a_trickled_body_gets_408_and_the_connection_closed(serve: tuple[str, int]) -> None:
    token = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode())
    head = (
        b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n"
        b"Authorization: Basic " + token + b"\r\nContent-Length: 200\r\n\r\n"
    )
    with _connect(serve) as sock:
        closed, got = _closed_by_server(sock, [head] + [b" "] * 60, 0.25)
    assert closed, "a body trickled at 4 bytes/s kept the request open"
    assert got.startswith(b"HTTP/1.1 408 ")
    assert b'"timeout"' in got


def test_the_connection_cap_answers_503_and_frees_up(serve: tuple[str, int]) -> None:
    url = f"http://{serve[0]}:{serve[1]}/health"
    idle = [_connect(serve) for _ in range(4)]
    try:
        time.sleep(0.2)
        assert requests.get(url, timeout=5).status_code == 503
        time.sleep(DEADLINE_S + 1.0)  # the silent connections are closed by the header deadline
        assert requests.get(url, timeout=5).status_code == 200
    finally:
        for sock in idle:
            sock.close()


def test_a_normal_request_still_works_on_a_kept_alive_connection(serve: tuple[str, int]) -> None:
    with requests.Session() as s:
        for _ in range(3):
            assert s.get(f"http://{serve[0]}:{serve[1]}/health", timeout=5).status_code == 200
            time.sleep(DEADLINE_S * 0.6)  # the header deadline does not run between requests
