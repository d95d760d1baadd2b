"""Where a webhook may go: URL rules when an endpoint is saved, and the address check
made on every attempt after resolving the name ourselves.

Without ``CHAT_WEBHOOK_ALLOW_HTTP`` a URL must be https; without
``CHAT_WEBHOOK_ALLOW_PRIVATE`` no attempt connects to an address that is not public
(loopback, private, link-local such as 169.254.169.254, shared, reserved, multicast,
unspecified, IPv4 hidden in IPv6). Every address a name resolves to must pass, so a
name with one public and one internal address is refused rather than raced.
"""

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from conversations.errors import ChatError

MAX_URL_CHARS = 2000
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Refused(Exception):
    """An attempt that must not be made; the message says why, for the log."""


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address.sixtofour:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def internal_reason(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``address`` is not a public one (None when it is)."""
    if isinstance(address, ipaddress.IPv6Address) and (inner := _embedded_ipv4(address)):
        return internal_reason(inner)
    for name in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(address, f"is_{name}"):
            return name.replace("_", "-")
    if not address.is_global:
        return "not public"
    return None


def check_url(url: str) -> str:
    """``url`` stripped, or ChatError ``invalid_url`` saying what is wrong with it."""
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise ChatError("invalid_url", f"A URL has at most {MAX_URL_CHARS} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ChatError("invalid_url", f"Not a valid URL: {exc}.") from None
    allowed = ("https", "http") if settings.CHAT_WEBHOOK_ALLOW_HTTP else ("https",)
    if parts.scheme not in allowed:
        raise ChatError("invalid_url", "The URL must start with https://.")
    if not parts.hostname or any(c.isspace() for c in url):
        raise ChatError("invalid_url", "The URL has no host name.")
    if parts.username is not None or parts.password is not None:
        raise ChatError(
            "invalid_url", "Put credentials in the path or the query, not in user:password@."
        )
    if port == 0:
        raise ChatError("invalid_url", "The URL's port must be 1 to 65535.")
    if not settings.CHAT_WEBHOOK_ALLOW_PRIVATE:
        host = parts.hostname.rstrip(".").lower()
        if host == "localhost" or host.endswith(".localhost"):
            raise ChatError("invalid_url", "The URL must not point at this server (localhost).")
        try:
            reason = internal_reason(ipaddress.ip_address(host))
        except ValueError:
            reason = None  # a name: checked after DNS on every attempt
        if reason:
            raise ChatError("invalid_url", f"The URL's address is {reason}, not a public one.")
    return url


@dataclass(frozen=True)
class Target:
    """Where an attempt connects: the address checked, and the name it stands for."""

    url: str  # the URL with the host replaced by the checked address
    host_header: str
    server_name: str | None  # for TLS: SNI and the certificate's name


async def resolve(host: str, port: int) -> list[str]:
    """The addresses of ``host``, in the resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(info[4][0] for info in infos))


async def target(url: str) -> Target:
    """Resolve ``url``'s host and check every address; raises Refused."""
    parts = urlsplit(url)
    allowed = ("https", "http") if settings.CHAT_WEBHOOK_ALLOW_HTTP else ("https",)
    if parts.scheme not in allowed:
        raise Refused(f"refused: {parts.scheme}:// is not allowed (https only)")
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        ipaddress.ip_address(host)
        addresses = [host]
    except ValueError:
        try:
            addresses = await resolve(host, port)
        except OSError as exc:
            raise Refused(f"could not resolve {host}: {exc}") from None
    if not addresses:
        raise Refused(f"could not resolve {host}")
    if not settings.CHAT_WEBHOOK_ALLOW_PRIVATE:
        for address in addresses:
            if reason := internal_reason(ipaddress.ip_address(address.split("%")[0])):
                raise Refused(f"refused: {host} resolves to {address}, a {reason} address")
    chosen = addresses[0]
    literal = f"[{chosen}]" if ":" in chosen else chosen
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    host_header = parts.netloc.rpartition("@")[2]
    return Target(
        url=parts._replace(netloc=netloc).geturl(),
        host_header=host_header,
        server_name=host if parts.scheme == "https" else None,
    )
