"""Rules for facility callbacks: which addresses ltfu may call, and which header lines it may send.

The address rule is applied to the address actually connected to (``delivery/callback_policy.py``
calls ``address_allowed`` from inside the DNS resolver), and at registration to IP literals.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Never called unless an allowed network covers them: loopback, link-local, private (RFC 1918),
#: CGNAT, ULA, multicast, unspecified, benchmarking, reserved and broadcast.
DENIED_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fe80::/10",
        "fec0::/10",
        "fc00::/7",
        "ff00::/8",
        "100::/64",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_6TO4 = ipaddress.ip_network("2002::/16")

#: Header names a callback registration may not set: transport framing and our own signature headers.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "content-type",
        "te",
        "upgrade",
        "keep-alive",
        "proxy-connection",
        "trailer",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)
RESERVED_PREFIXES = ("x-ltfu-",)
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 §5.6.2 token
_FIELD_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")  # no control characters (CR, LF, NUL, DEL...)
MASK = "***"


class CallbackRefused(ValueError):
    """A callback address or header line that the policy refuses (the message says why)."""


def parse_networks(text: str | None) -> tuple[Network, ...]:
    """``"127.0.0.0/8, 10.20.0.0/16"`` → networks; a bad CIDR raises ValueError."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in (text or "").split(",") if part.strip())


def _embedded_v4(ip: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, IPv4-compatible, NAT64 or 6to4 IPv6 address."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or (int(ip) >> 32 == 0 and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _6TO4:
        return ip.sixtofour
    return None


def _forms(ip: Address) -> list[Address]:
    embedded = _embedded_v4(ip)
    return [ip] if embedded is None else [ip, embedded]


def is_denied(ip: Address) -> bool:
    return any(form in net for form in _forms(ip) for net in DENIED_NETWORKS if form.version == net.version)


def in_networks(ip: Address, networks: Iterable[Network]) -> bool:
    nets = tuple(networks)
    return any(form in net for form in _forms(ip) for net in nets if form.version == net.version)


def address_allowed(ip: str | Address, scheme: str, allowed: Iterable[Network]) -> bool:
    """May ltfu connect to ``ip`` for a callback of ``scheme``? https: anything not denied, or in an
    allowed network; plain http: only addresses in an allowed network."""
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if in_networks(addr, allowed):
        return True
    return scheme == "https" and not is_denied(addr)


def check_address(url: str, allowed: Iterable[Network]) -> None:
    """What can be known of a callback URL before resolving it: scheme, host, and IP literals."""
    nets = tuple(allowed)
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise CallbackRefused("the callback address is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise CallbackRefused("the callback address must be an https:// URL with a host")
    if parts.username or parts.password:
        raise CallbackRefused("the callback address may not carry credentials; use a header")
    if parts.scheme == "http" and not nets:
        raise CallbackRefused("plain http callbacks are allowed only to LTFU_CALLBACK_ALLOWED_NETWORKS; use https")
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return
    if not address_allowed(literal, parts.scheme, nets):
        raise CallbackRefused(
            f"the callback address {parts.hostname} is not allowed "
            "(loopback, private, link-local or not in LTFU_CALLBACK_ALLOWED_NETWORKS)"
        )


def split_header(line: str) -> tuple[str, str]:
    """``"Name: value"`` → (name, value), both checked; raises CallbackRefused."""
    name, sep, value = line.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN.match(name):
        raise CallbackRefused("a header line must be 'Name: value' with an RFC 9110 token as name")
    if not _FIELD_VALUE.match(value):
        raise CallbackRefused(f"the value of header {name} contains control characters")
    low = name.lower()
    if low in RESERVED_HEADERS or low.startswith(RESERVED_PREFIXES):
        raise CallbackRefused(f"the header {name} is set by ltfu and may not be configured")
    return name, value
