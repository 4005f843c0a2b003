"""The callback address and header rules (pure), and the resolver that applies them at connect time."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from ltfu.delivery.callback_policy import CallbackAddressRefused, PolicyResolver, refused_by_policy, session
from ltfu.domain.callbacks import CallbackRefused, address_allowed, check_address, parse_networks, split_header

LOOPBACK = parse_networks("127.0.0.0/8")

DENIED = ["127.0.0.1", "127.9.9.9", "::1", "169.254.169.254", "fe80::1", "10.0.0.1", "172.16.5.4", "192.168.1.1",
          "100.64.0.1", "fc00::1", "fd12:3456::1", "224.0.0.1", "ff02::1", "0.0.0.0", "::", "255.255.255.255",
          "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.1.2.3", "::127.0.0.1", "64:ff9b::7f00:1",
          "2002:7f00:1::1", "198.18.0.1"]
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"]


@pytest.mark.parametrize("ip", DENIED)
def test_denied_addresses_refused_for_https(ip: str) -> None:
    assert not address_allowed(ip, "https", ())
    assert not address_allowed(ip, "http", ())


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_https_only(ip: str) -> None:
    assert address_allowed(ip, "https", ())
    assert not address_allowed(ip, "http", ())  # plain http only to the allowed networks
    assert not address_allowed(ip, "http", LOOPBACK)


def test_allowed_networks_open_exactly_what_they_name() -> None:
    county = parse_networks("10.20.0.0/16, 127.0.0.0/8")
    for ip in ("10.20.3.4", "127.0.0.1", "::ffff:127.0.0.1"):
        assert address_allowed(ip, "http", county) and address_allowed(ip, "https", county)
    for ip in ("10.21.0.1", "192.168.1.1", "169.254.169.254", "::1"):
        assert not address_allowed(ip, "https", county)
    with pytest.raises(ValueError):
        parse_networks("10.0.0.0/33")


@pytest.mark.parametrize("url", [
    "ftp://facility.example/cb", "file:///etc/passwd", "https:///nohost", "https://user:pw@facility.example/cb",
    "http://facility.example/cb", "https://127.0.0.1/cb", "https://[::1]:8443/cb", "https://169.254.169.254/latest",
    "https://10.0.0.8/cb", "https://[::ffff:127.0.0.1]/cb", "https://facility.example:99999/cb",
])
def test_addresses_refused_at_registration(url: str) -> None:
    with pytest.raises(CallbackRefused):
        check_address(url, ())


def test_addresses_accepted_at_registration() -> None:
    check_address("https://emr.facility.example/fhir/notify", ())
    check_address("http://127.0.0.1:9000/cb", LOOPBACK)
    check_address("http://facility.lan/cb", LOOPBACK)  # a name: decided when it is resolved, at connect time


@pytest.mark.parametrize("line", [
    "Host: internal-admin.local", "content-length: 0", "Transfer-Encoding: chunked", "Connection: close",
    "webhook-signature: v1,forged", "Webhook-Id: x", "X-LTFU-Signature: sha256=00", "X-A: b\r\nX-Injected: yes",
    "X-A: b\nX-Injected: yes", "X-A: nul\x00", "Bad Name: x", "NoColonHere", ": empty-name", "X(A): y",
])
def test_header_lines_refused(line: str) -> None:
    with pytest.raises(CallbackRefused):
        split_header(line)


def test_header_lines_accepted() -> None:
    assert split_header("Authorization: Bearer abc.def") == ("Authorization", "Bearer abc.def")
    assert split_header("X-Api-Key:k:with:colons") == ("X-Api-Key", "k:with:colons")


class FakeDns(AbstractResolver):
    """Answers from a script: each resolution of a name takes the next address (DNS rebinding)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        self.calls.append(host)
        ip = self.answers[host].pop(0) if len(self.answers[host]) > 1 else self.answers[host][0]
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        return [{"hostname": host, "host": ip, "port": port, "family": fam, "proto": 0, "flags": 0}]

    async def close(self) -> None:
        return None


def test_rebinding_between_check_and_connect_is_refused() -> None:
    dns = FakeDns({"rebind.example": ["93.184.216.34", "127.0.0.1"]})
    resolver = PolicyResolver("https", (), dns)

    async def run() -> None:
        first = await resolver.resolve("rebind.example", 443)
        assert [r["host"] for r in first] == ["93.184.216.34"]  # what a check before connecting would see
        with pytest.raises(CallbackAddressRefused):
            await resolver.resolve("rebind.example", 443)  # what the connection gets: refused

    asyncio.run(run())


def test_only_allowed_answers_are_kept() -> None:
    class Many(FakeDns):
        async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
            return [{"hostname": host, "host": ip, "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}
                    for ip in ("127.0.0.1", "93.184.216.34", "10.1.1.1")]

    kept = asyncio.run(PolicyResolver("https", (), Many({})).resolve("mixed.example", 443))
    assert [r["host"] for r in kept] == ["93.184.216.34"]


def test_a_name_resolving_to_loopback_is_refused_unless_allowed() -> None:
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="ok")

    async def run() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            for scheme in ("http", "https"):
                dns = FakeDns({"facility.example": ["127.0.0.1"]})
                async with session(scheme, (), timeout_s=5, verify_tls=True, inner=dns) as s:
                    with pytest.raises(aiohttp.ClientConnectorError) as caught:
                        await s.post(f"{scheme}://facility.example:{port}/cb", data=b"{}")
                    assert refused_by_policy(caught.value)
                assert dns.calls == ["facility.example"]
            assert hits == []  # nothing reached the loopback listener
            dns = FakeDns({"facility.example": ["127.0.0.1"]})
            async with (session("http", LOOPBACK, timeout_s=5, verify_tls=True, inner=dns) as s,
                        s.post(f"http://facility.example:{port}/cb", data=b"{}") as resp):
                assert resp.status == 200
            assert hits == ["/cb"]
        finally:
            await runner.cleanup()

    asyncio.run(run())
