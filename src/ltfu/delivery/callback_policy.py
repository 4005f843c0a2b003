"""The callback address policy, enforced where the connection is made.

aiohttp connects to exactly the addresses its resolver returns, so checking them inside the
resolver checks the address actually connected to: a name that resolves to a public address when
it is registered and to 127.0.0.1 when it is called (DNS rebinding) is refused at the second
resolution. IP literals never reach a resolver: the notifier checks them (``domain.callbacks.check_address``)
before the request.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from ltfu.domain.callbacks import CallbackRefused, Network, address_allowed


class CallbackAddressRefused(OSError):
    """Every address of the callback host is refused by the policy."""


class PolicyResolver(AbstractResolver):
    """Resolves with ``inner`` and keeps only the addresses the policy allows for ``scheme``."""

    def __init__(self, scheme: str, allowed: Iterable[Network], inner: AbstractResolver | None = None) -> None:
        self.scheme = scheme
        self.allowed = tuple(allowed)
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        kept = [r for r in results if address_allowed(r["host"], self.scheme, self.allowed)]
        if not kept:
            raise CallbackAddressRefused(f"{host} resolves only to addresses the callback policy refuses")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def refused_by_policy(exc: BaseException) -> bool:
    """Whether an aiohttp connection error came from the policy (rather than the network)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, CallbackAddressRefused | CallbackRefused):
            return True
        seen = getattr(seen, "os_error", None) or seen.__cause__
    return False


def session(
    scheme: str,
    allowed: Iterable[Network],
    *,
    timeout_s: float,
    verify_tls: bool,
    inner: AbstractResolver | None = None,
) -> aiohttp.ClientSession:
    """A client session whose every connection obeys the policy for ``scheme`` (no proxy from env)."""
    connector = aiohttp.TCPConnector(
        resolver=PolicyResolver(scheme, allowed, inner), ssl=None if verify_tls else False, limit=64
    )
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s), connector=connector, trust_env=False)


def scheme_of(url: str) -> str:
    return urlsplit(url).scheme.lower()
