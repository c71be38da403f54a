"""Where the service may send plugin calls: the SSRF guard of plugin URLs.

``EgressPolicy.resolve(host, port)`` resolves a plugin host with ``getaddrinfo`` (so decimal,
hex and octal IPv4 spellings such as ``2130706433`` or ``0x7f000001`` mean what the C library
says they mean) and returns the addresses only when every one of them is public: loopback,
private, link-local (cloud metadata at 169.254.169.254), shared (100.64/10), unspecified,
multicast and reserved addresses are refused, also when wrapped in IPv6 (``::ffff:a.b.c.d``,
NAT64 ``64:ff9b::/96``, 6to4, Teredo). An explicit allow-list (``--allow-plugin-host``:
addresses, CIDR networks or exact host names) opens chosen hosts for local development.
``denied`` endpoints (the service's own Redis) stay refused even when allow-listed.

The check runs at registration and again at every call, and the caller connects to the very
address it checked (``rewards.service.plugins``), so a DNS answer that changes between the two
(rebinding) cannot redirect a call. This module resolves names; it opens no connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``(host, port) -> addresses``; injectable so tests can play a rebinding DNS server.
Resolver = Callable[[str, int], Awaitable[list[str]]]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class EgressRefused(ValueError):
    """The plugin host is not an allowed destination (or does not resolve)."""


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``getaddrinfo`` gives for ``host`` (run off the event loop)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise EgressRefused(f"host {host!r} does not resolve ({exc})") from None
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo), if any."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address (None when it is)."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        reason = blocked_reason(inner)
        return None if reason is None else f"{reason} ({inner}, wrapped in IPv6)"
    for attr, reason in (("is_loopback", "a loopback address"),
                         ("is_unspecified", "the unspecified address"),
                         ("is_link_local", "a link-local (metadata) address"),
                         ("is_multicast", "a multicast address"),
                         ("is_private", "a private address"),
                         ("is_reserved", "a reserved address")):
        if getattr(ip, attr):
            return reason
    if not ip.is_global:
        return "not a public address"
    return None


@dataclass(frozen=True)
class EgressPolicy:
    """Public addresses only, plus the allow-listed ``networks`` and exact host ``names``;
    never the ``denied`` (host, port) endpoints."""

    networks: tuple[IPNetwork, ...] = ()
    names: frozenset[str] = frozenset()
    resolver: Resolver = system_resolve
    denied: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_entries(cls, entries: Iterable[str], resolver: Resolver = system_resolve,
                     denied: Iterable[tuple[str, int]] = ()) -> EgressPolicy:
        """Build from allow-list entries: IPs or CIDR networks, or host names (exact match)."""
        networks: list[IPNetwork] = []
        names: set[str] = set()
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(names), resolver, tuple(denied))

    def allows_address(self, address: str) -> bool:
        """True when ``address`` may be called (public, or inside an allowed network)."""
        ip = ipaddress.ip_address(address)
        candidates = [ip] + ([inner] if (inner := embedded_ipv4(ip)) is not None else [])
        if any(c in net for c in candidates for net in self.networks
               if c.version == net.version):
            return True
        return blocked_reason(ip) is None

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host``; ``EgressRefused`` unless all are allowed.

        An allow-listed host name skips the address check (the operator vouched for it).
        """
        host = host.strip("[]")
        addresses = await self.resolver(host, port)
        if not addresses:
            raise EgressRefused(f"host {host!r} does not resolve")
        if await self._denied(host, port, addresses):
            raise EgressRefused(f"plugin host {host!r} port {port} is the service's own "
                                "Redis; it can never be a plugin")
        if host.lower().rstrip(".") in self.names:
            return addresses
        for address in addresses:
            if not self.allows_address(address):
                reason = blocked_reason(ipaddress.ip_address(address)) or "not allowed"
                shown = host if host == address else f"{host!r} resolves to {address}, which"
                raise EgressRefused(f"plugin host {shown} is {reason}; plugins must be public "
                                    "hosts unless allow-listed (--allow-plugin-host)")
        return addresses

    async def _denied(self, host: str, port: int, addresses: list[str]) -> bool:
        for denied_host, denied_port in self.denied:
            if denied_port != port:
                continue
            if host == denied_host:
                return True
            try:
                if set(addresses) & set(await self.resolver(denied_host, denied_port)):
                    return True
            except EgressRefused:
                continue  # Redis's own name does not resolve: nothing to compare
        return False
