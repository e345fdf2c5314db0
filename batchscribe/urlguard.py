"""Which URLs this service will call (webhooks) or fetch (source URLs): the SSRF guard.

Only public `https://` URLs: the URL is checked when the job is created, and the host is
resolved again when it is called and the connection made to the address that was checked
(no DNS rebinding to an internal address in between). Private, loopback, link-local (the
instance metadata service), shared, multicast and reserved addresses are refused, and so are
URLs with credentials or a fragment. `allow_private` (the local stack only) also takes
`http://` and private addresses.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3

from batchscribe import errors

MAX_URL_LENGTH = 2048

Resolver = Callable[[str, int], list[str]]


class UrlRefused(errors.BadRequest):
    """A URL this service will not call; subclasses name the field and the code."""

    code = "invalid_url"
    field = "url"


def _blocked(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    path: str  # with the query

    @property
    def host_header(self) -> str:
        return self.host if self.port in (80, 443) else f"{self.host}:{self.port}"


def check_url(url: str, allow_private: bool = False, refused: type[UrlRefused] = UrlRefused) -> Target:
    """The parts of a URL this service will call, or `refused` saying why."""
    name = refused.field
    if len(url) > MAX_URL_LENGTH:
        raise refused(f"{name} is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise refused(f"{name} is not a valid URL: {exc}") from exc
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise refused(f"{name} must be an https:// URL")
    if parts.username or parts.password:
        raise refused(f"{name} may not carry credentials in the URL")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise refused(f"{name} has no host")
    if parts.fragment:
        raise refused(f"{name} may not have a #fragment")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
        internal_name = host.lower() == "localhost" or host.lower().endswith((".localhost", ".internal", ".local"))
        if internal_name and not allow_private:
            raise refused(f"{name} host {host!r} is not a public address") from None
    if literal is not None and _blocked(str(literal)) and not allow_private:
        raise refused(f"{name} address {host} is not a public address")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(
        url=url, scheme=parts.scheme, host=host, port=port or (443 if parts.scheme == "https" else 80), path=path
    )


def system_resolver(host: str, port: int) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


def resolve_public(
    target: Target,
    resolver: Resolver = system_resolver,
    allow_private: bool = False,
    refused: type[UrlRefused] = UrlRefused,
) -> str:
    """The address to connect to: every address the host resolves to must be public (one
    private answer among public ones is refused too: the choice would be the attacker's)."""
    name = refused.field
    try:
        addresses = resolver(target.host, target.port)
    except OSError as exc:
        raise refused(f"{name} host {target.host!r} does not resolve: {exc}") from exc
    if not addresses:
        raise refused(f"{name} host {target.host!r} does not resolve")
    if not allow_private:
        bad = [a for a in addresses if _blocked(a)]
        if bad:
            raise refused(f"{name} host {target.host!r} resolves to a non-public address ({bad[0]})")
    return addresses[0]


def pinned_pool(target: Target, address: str, timeout: urllib3.Timeout) -> urllib3.HTTPConnectionPool:
    """A connection pool to `address` (the checked one) that still speaks to `target.host`:
    TLS with its name (SNI and the certificate check), no retries (the caller decides)."""
    if target.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            address,
            target.port,
            server_hostname=target.host,
            assert_hostname=target.host,
            timeout=timeout,
            retries=False,
        )
    return urllib3.HTTPConnectionPool(address, target.port, timeout=timeout, retries=False)
