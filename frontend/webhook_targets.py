"""Where a webhook may go: a request the server makes on a user's behalf, so a way to reach what the
user cannot (server-side request forgery) unless bounded here.

`IMAGEGEN_WEBHOOK_ALLOWED_HOSTS` lists what the operator allows: host names or addresses, named
exactly, or patterns (`*.example.com` for its subdomains, `*` for any host). A host the operator
named exactly is trusted as named: it may use `http` and resolve to any address (an internal
receiver, 127.0.0.1 in tests). A host that only a pattern allows must use `https` and resolve to
public addresses only: never loopback, private, link-local, multicast, unspecified or reserved ones,
checked when the job is submitted and again on the addresses resolved at each delivery, which is
made to one of those addresses (so a name that resolves elsewhere the second time, DNS rebinding,
reaches nothing it was not checked for).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_S = 5.0
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(ValueError):
    """A webhook URL the server will not call; the message says why, safe to show the caller."""


@dataclass(frozen=True)
class Target:
    """A checked webhook URL, in parts."""

    url: str
    scheme: str
    host: str
    """Lower-case; an IPv6 address without brackets."""
    port: int
    path: str
    """Path and query, as sent."""
    named: bool
    """The operator named this host exactly: any address, `http` allowed."""

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


class WebhookTargets:
    """The operator's allow list, applied to a URL and to the addresses its host resolves to."""

    def __init__(self, allowed_hosts: tuple[str, ...]) -> None:
        for host in allowed_hosts:
            if host.startswith("*") and host != "*" and not host.startswith("*."):
                raise ValueError(f"IMAGEGEN_WEBHOOK_ALLOWED_HOSTS: {host!r} is neither `*` nor `*.DOMAIN`")
        self._named = frozenset(host.strip("[]") for host in allowed_hosts if not host.startswith("*"))
        self._patterns = tuple(host[1:] for host in allowed_hosts if host.startswith("*"))
        """`*.example.com` as `.example.com`; `*` as the empty suffix, which every host ends with."""

    def parse(self, url: str) -> Target:
        """`url` as a Target, if the allow list lets the server call it; TargetRefused otherwise."""
        if not self._named and not self._patterns:
            raise TargetRefused("Webhooks are not enabled on this server (it allows no webhook hosts).")
        if len(url) > MAX_URL_LENGTH:
            raise TargetRefused(f"The webhook URL is longer than {MAX_URL_LENGTH} characters.")
        if not url.isascii() or not url.isprintable() or " " in url:
            raise TargetRefused("The webhook URL must be ASCII without spaces (a host name in punycode).")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise TargetRefused("The webhook URL is not a valid URL.") from None
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise TargetRefused("The webhook URL must be an https:// URL with a host.")
        if parts.username is not None or parts.password is not None or parts.fragment:
            raise TargetRefused("The webhook URL must not carry credentials or a fragment.")
        host = parts.hostname.rstrip(".")
        named = host in self._named
        if not named and not any(host.endswith(suffix) for suffix in self._patterns):
            raise TargetRefused(f"The host {host!r} is not among this server's allowed webhook hosts.")
        if parts.scheme == "http" and not named:
            raise TargetRefused("The webhook URL must use https (http only to hosts the operator names).")
        literal = _address(host)
        if literal is not None and not named:
            _check_public(literal)
        default = 443 if parts.scheme == "https" else 80
        path = parts.path or "/"
        return Target(
            url, parts.scheme, host, port or default, path + (f"?{parts.query}" if parts.query else ""), named
        )

    async def addresses(self, target: Target) -> list[IPAddress]:
        """The addresses `target`'s host resolves to now, all checked (unless the operator named it):
        the delivery connects to one of these, never resolving the name again."""
        literal = _address(target.host)
        if literal is not None:
            return [literal]
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            raise TargetRefused(f"The webhook host {target.host!r} does not resolve.") from None
        found = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        if not target.named:
            for address in found:
                _check_public(address, target.host)
        return found

    async def check(self, url: str) -> Target:
        """`parse`, and the host's addresses checked now: what a submission runs before accepting."""
        target = self.parse(url)
        await self.addresses(target)
        return target


def _address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _reached(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries to (`::ffff:10.0.0.1`, NAT64's `64:ff9b::a00:1`, 6to4's
    `2002:a00:1::`, Teredo's client), which Python's checks do not look inside; else the address."""
    if not isinstance(address, ipaddress.IPv6Address):
        return address
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None) or address


def _check_public(address: IPAddress, host: str | None = None) -> None:
    address = _reached(address)
    kinds = (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-public", not address.is_global),
    )
    for kind, found in kinds:
        if found:
            what = f"The webhook host {host!r} resolves to" if host else "The webhook URL names"
            raise TargetRefused(f"{what} a {kind} address ({address}), which is refused.")
