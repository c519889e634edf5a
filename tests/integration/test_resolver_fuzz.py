"""10,000 hostile /address requests over raw sockets (httpx would normalise the URLs).

Seeded and bounded: path traversal, huge values, bad percent-encoding and invalid
UTF-8, repeated parameters, NUL, raw non-ASCII bytes and random unicode. Every
answer must be a 4xx, except well-formed existing namespaces (200) and unknown
ones (404); no answer is ever a 5xx, and no 2xx names a path outside the shim
base directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from urllib.parse import quote

import pytest

from snapmux.adapters.http.server import HttpServer
from snapmux.adapters.resolver.http_api import AddressApi
from snapmux.adapters.resolver.shim_base import ShimBaseAddressResolver

pytestmark = pytest.mark.integration

SEED, COUNT, WORKERS = 20261123, 10_000, 8
KNOWN = ["vm-a", "vm.b", "vm_c"]
TRAVERSAL = ["..", "../..", "../../etc/passwd", "..%2F..%2Fetc", "%2e%2e%2f%2e%2e", "vm-a/../../x", "/etc/passwd",
             "vm-a%2F..%2F..%2F..", "default#vm-a", "%23vm-a", "vm-a%00", ".", "./vm-a", "vm-a/.", "~root", "*", "%2F"]
BAD_ESCAPES = ["%", "%z1", "%4", "%%", "%ff", "%c3%28", "%e2%82", "%ed%a0%80", "%f8%88%80%80%80", "%c0%af", "%00%ff"]


def hostile_value(rng: random.Random) -> str:
    kind = rng.randrange(9)
    if kind == 0:
        return rng.choice(TRAVERSAL)
    if kind == 1:
        return rng.choice(BAD_ESCAPES) + rng.choice(["", "vm-a", "%41"])
    if kind == 2:
        return "a" * rng.choice([77, 200, 4000, 8200, 20000])
    if kind == 3:
        text = "".join(chr(rng.randrange(0x80, 0x2FFFF)) for _ in range(rng.randrange(1, 8)))
        return quote(text.encode("utf-8", "surrogatepass"), safe="")
    if kind == 4:
        return quote("".join(chr(rng.randrange(0, 0x80)) for _ in range(rng.randrange(1, 30))), safe="")
    if kind == 5:
        return "".join(rng.choice("ab.-_%/\\\"'<>?#&=+ 0") for _ in range(rng.randrange(1, 40)))
    if kind == 6:
        return '"' + rng.choice(KNOWN + ["nope", "", '"', "../x"]) + '"'
    if kind == 7:
        return rng.choice(KNOWN + ["nope", "unknown-vm", "x" * 76])
    return rng.choice(["vm-a", "nope"]) + rng.choice(["%00", "\x00", "\x7f", "\t", " ", "\xe9", "\u2028"])


def hostile_target(rng: random.Random) -> bytes:
    shape = rng.randrange(6)
    value = hostile_value(rng)
    if shape == 0:
        query = f"namespace={value}&namespace={rng.choice(KNOWN)}"
    elif shape == 1:
        query = "&".join(rng.choice(["namespace", "ns", "", "namespace[]", "%6eamespace"]) + "=" + value for _ in range(2))
    elif shape == 2:
        query = value
    else:
        query = f"namespace={value}"
    path = rng.choice(["/address", "/address", "/address", "/%61ddress", "/address/", "//address", "/address%00"])
    return (path + "?" + query).encode("utf-8", "surrogatepass")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers["content-length"]))
    return int(lines[0].split()[1]), headers.get("connection") == "close", body


async def worker(port: int, targets: list[bytes], results: list) -> None:
    connection = None
    for target in targets:
        if connection is None:
            connection = await asyncio.open_connection("127.0.0.1", port)
        reader, writer = connection
        writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: fuzz\r\n\r\n")
        status, closed, body = await read_response(reader)
        results.append((target, status, body))
        if closed:
            writer.close()
            connection = None
    if connection is not None:
        connection[1].close()


async def test_ten_thousand_hostile_queries_never_5xx_never_escape(tmp_path):
    base = tmp_path / "shim-base"
    for namespace in KNOWN:
        (base / f"default#{namespace}").mkdir(parents=True)
        (base / f"default#{namespace}" / "firecracker.vsock").touch()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "firecracker.vsock").touch()  # bait one level above the base
    server = HttpServer(AddressApi(ShimBaseAddressResolver(str(base))), name="fuzz", access_log=False)
    port = await server.start_tcp("127.0.0.1", 0)
    rng = random.Random(SEED)
    targets = [hostile_target(rng) for _ in range(COUNT)]
    results: list = []
    try:
        await asyncio.gather(*(worker(port, targets[i::WORKERS], results) for i in range(WORKERS)))
    finally:
        await server.stop()
    assert len(results) == COUNT
    statuses = {status for _, status, _ in results}
    assert all(status < 500 for status in statuses), statuses
    root = os.path.realpath(base)
    ok = [(target, json.loads(body)) for target, status, body in results if 200 <= status < 300]
    for target, payload in ok:
        assert os.path.commonpath([root, os.path.realpath(payload["address"])]) == root, target
        assert payload["labels"]["namespace"] in KNOWN, target
    assert 0 < len(ok) < COUNT // 2 and statuses >= {200, 400, 404}
