"""HttpServer over real loopback/unix sockets, spoken to in raw bytes (httpx would normalise)."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from snapmux.adapters.http.server import HttpRequest, HttpResponse, HttpServer, json_response


SLOW_STARTED: list[asyncio.Event] = []
"""Set when a /slow request reaches the handler, so a test can stop the server mid-request."""


async def echo(request: HttpRequest) -> HttpResponse:
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    if request.path == "/slow":
        for started in SLOW_STARTED:
            started.set()
        await asyncio.sleep(0.3)
    return json_response(
        200,
        {"method": request.method, "path": request.path, "query": {k: list(v) for k, v in request.query.items()},
         "body": request.body.decode(), "raw": request.raw_target, "host": request.headers.get("host")},
        (("X-Test", "yes"),),
    )


@pytest.fixture
async def server():
    http = HttpServer(echo, name="test", header_timeout=0.5, idle_timeout=2.0, max_request_bytes=1024)
    http.port = await http.start_tcp("127.0.0.1", 0)
    try:
        yield http
    finally:
        await http.stop(grace=2.0)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


def get(target: str, extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


async def test_get_decodes_path_and_repeated_query_parameters(server):
    status, headers, body = await exchange(server.port, get("/a%20b?x=1&x=2&y=%C3%BC+z&flag"))
    payload = json.loads(body)
    assert status == 200 and headers["content-type"] == "application/json" and headers["x-test"] == "yes"
    assert payload["path"] == "/a b" and payload["query"] == {"x": ["1", "2"], "y": ["ü z"], "flag": [""]}
    assert payload["raw"] == "/a%20b?x=1&x=2&y=%C3%BC+z&flag" and payload["host"] == "t"


async def test_keep_alive_serves_several_requests_on_one_connection(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for i in range(3):
            writer.write(get(f"/n{i}"))
            status, headers, body = await read_response(reader)
            assert status == 200 and json.loads(body)["path"] == f"/n{i}" and headers["connection"] == "keep-alive"
    finally:
        writer.close()


async def test_pipelined_requests_are_answered_in_order(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(get("/one") + get("/two"))
        answers = [json.loads((await read_response(reader))[2])["path"] for _ in range(2)]
        assert answers == ["/one", "/two"]
    finally:
        writer.close()


async def test_head_answers_headers_without_body(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"HEAD /x HTTP/1.1\r\n\r\n" + get("/after"))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: " in head
        status, _, body = await read_response(reader)
        assert status == 200 and json.loads(body)["path"] == "/after"
    finally:
        writer.close()


async def test_connection_close_and_http10_close_after_answering(server):
    for raw in (get("/x", "Connection: close\r\n"), b"GET /x HTTP/1.0\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(raw)
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (get("/x?ns=%zz"), 400),
        (get("/x?ns=%4"), 400),
        (get("/x?ns=%ff%fe"), 400),
        (get("/%c3%28"), 400),
        (b"GET /\xff HTTP/1.1\r\n\r\n", 400),
        (b"GET http://evil/ HTTP/1.1\r\n\r\n", 400),
        (b"GET * HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET / SPDY\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\n\r\n", 400),
        (b"G(T / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nNo-Colon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
        (b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", 413),
        (b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nX: " + b"v" * 10000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * 200 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + (b"X-Long: " + b"v" * 8000 + b"\r\n") * 3 + b"\r\n", 431),
    ],
    ids=lambda v: repr(v)[:48] if isinstance(v, bytes) else str(v),
)
async def test_hostile_requests_get_4xx_json_and_a_closed_connection(server, raw, status):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(raw)
        got, headers, body = await read_response(reader)
        assert got == status and "error" in json.loads(body) and headers["connection"] == "close"
    finally:
        writer.close()


async def test_body_with_content_length_reaches_the_handler(server):
    status, _, body = await exchange(server.port, b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
    assert status == 200 and json.loads(body)["body"] == "hello"


async def test_expect_100_continue_is_honoured(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"POST /p HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"ok")
        status, _, body = await read_response(reader)
        assert status == 200 and json.loads(body)["body"] == "ok"
    finally:
        writer.close()


async def test_slowloris_head_is_cut_off_with_408(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nX-Slow: 1\r\n")
        await writer.drain()
        status, headers, _ = await read_response(reader)
        assert status == 408 and headers["connection"] == "close"
    finally:
        writer.close()


async def test_handler_exception_is_a_logged_500_json(server, caplog):
    status, _, body = await exchange(server.port, get("/boom"))
    assert status == 500 and json.loads(body) == {"error": "internal error: RuntimeError"}
    assert "handler failed" in caplog.text


async def test_access_log_has_one_line_per_request(server, caplog):
    caplog.set_level("INFO", logger="snapmux.access.test")
    await exchange(server.port, get("/logged?q=1"))
    lines = [r.getMessage() for r in caplog.records if r.name == "snapmux.access.test"]
    assert len(lines) == 1 and "/logged?q=1" in lines[0] and " 200 " in lines[0]


async def test_stop_lets_in_flight_requests_finish_and_closes_idle_connections(server):
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", server.port)
    idle_writer.write(get("/warm"))
    await read_response(idle_reader)
    started = asyncio.Event()
    SLOW_STARTED[:] = [started]
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(get("/slow"))
    await writer.drain()
    await asyncio.wait_for(started.wait(), 5)  # the request is in flight when stop begins
    stopping = asyncio.create_task(server.stop(grace=5.0))
    status, headers, _ = await read_response(reader)
    await stopping
    assert status == 200 and headers["connection"] == "close"
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)
    writer.close()
    idle_writer.close()


async def test_unix_socket_and_prebound_socket(tmp_path):
    http = HttpServer(echo, name="unix", access_log=False)
    path = str(tmp_path / "h.sock")
    await http.start_unix(path)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    await http.start_socket(sock)
    try:
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(get("/via-unix"))
        assert json.loads((await read_response(reader))[2])["path"] == "/via-unix"
        writer.close()
        assert json.loads((await exchange(port, get("/via-sock")))[2])["path"] == "/via-sock"
        assert http.listening[0] == f"unix:{path}"
    finally:
        await http.stop()


async def test_at_the_connection_cap_the_oldest_idle_connection_makes_room():
    http = HttpServer(echo, name="test", max_connections=2)
    port = await http.start_tcp("127.0.0.1", 0)
    try:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for reader, writer in idle:  # a served request each: both now idle keep-alives
            writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader))[0] == 200
        assert (await exchange(port, b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))[0] == 200
        oldest_reader, _ = idle[0]
        assert await asyncio.wait_for(oldest_reader.read(), 5) == b""  # closed to make room
        newer_reader, newer_writer = idle[1]
        newer_writer.write(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(newer_reader))[0] == 200
        for _, writer in idle:
            writer.close()
    finally:
        await http.stop(grace=1.0)


async def test_at_the_connection_cap_with_every_connection_busy_a_newcomer_gets_503():
    started, release = asyncio.Event(), asyncio.Event()

    async def blocking(request: HttpRequest) -> HttpResponse:
        started.set()
        await release.wait()
        return json_response(200, {})

    http = HttpServer(blocking, name="test", max_connections=1)
    port = await http.start_tcp("127.0.0.1", 0)
    try:
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", port)
        busy_writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(started.wait(), 5)
        status, headers, body = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 503 and headers["connection"] == "close"
        assert json.loads(body) == {"error": "too many connections"}
        release.set()
        assert (await read_response(busy_reader))[0] == 200  # the busy one was never disturbed
        busy_writer.close()
    finally:
        await http.stop(grace=1.0)
