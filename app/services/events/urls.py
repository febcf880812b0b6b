"""Which webhook URLs may be called: the SSRF guard (docs/events.md, "SSRF").

A URL is refused when its host is, or resolves to, an address that is not on the public
internet: loopback, private, link-local (cloud metadata services live there), unique-local,
multicast, reserved, unspecified, shared (100.64/10), and IPv6 forms that embed such an
IPv4 address (IPv4-mapped, -compatible, 6to4, NAT64). Hosts are read the way the
resolver would read them: ``127.1``, ``2130706433``, ``0x7f000001`` and ``0177.0.0.1``
are all 127.0.0.1 to inet_aton(3), so they are to this check too. The check runs when an
endpoint is saved and again before every send, on the addresses the send connects to
(so a name that later resolves elsewhere, DNS rebinding, gains nothing)."""

import asyncio
import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from app.errors import UrlNotAllowed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Names that always mean this machine or a metadata service, whatever DNS says.
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "metadata.google.internal", "metadata")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")
_HOST_CHARS = re.compile(r"^[a-z0-9._-]+$")


def _inet_aton_part(part: str) -> int:
    """One part of an inet_aton address: decimal, octal (leading 0) or hex (0x)."""
    if re.fullmatch(r"0[xX][0-9a-fA-F]*", part):
        return int(part[2:] or "0", 16)
    if re.fullmatch(r"0[0-7]*", part):
        return int(part, 8)
    if re.fullmatch(r"[1-9][0-9]*", part):
        return int(part)
    raise ValueError(part)


def parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """``host`` as inet_aton(3) reads it (a, a.b, a.b.c, a.b.c.d; each part decimal,
    octal or hex), or None when it is not such a number."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    try:
        values = [_inet_aton_part(p) for p in parts]
    except ValueError:
        return None
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(parts)):
        return None
    number = 0
    for v in head:
        number = number << 8 | v
    number = number << 8 * (5 - len(parts)) | last
    return ipaddress.IPv4Address(number)


def parse_ip(host: str) -> IPAddress | None:
    """A literal address in any spelling a URL may carry, or None for a name."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return None
    return parse_ipv4(host)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if (
        address in _NAT64
        or address in _NAT64_LOCAL
        or (address in _COMPATIBLE and int(address) > 1)
    ):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: IPAddress) -> str | None:
    """Why an address may not be called, or None when it is a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = refusal(embedded)
            return f"it embeds {embedded}, {inner}" if inner else None
    if isinstance(address, ipaddress.IPv6Address) and address in _UNIQUE_LOCAL:
        return "a unique-local address"
    for attribute, words in (
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address (cloud metadata services live there)"),
        ("is_multicast", "a multicast address"),
        ("is_unspecified", "the unspecified address"),
        ("is_reserved", "a reserved address"),
        ("is_private", "a private address"),
    ):
        if getattr(address, attribute):
            return words
    if not address.is_global:
        return "not a public address"
    return None


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: its parts, and the host as written (for Host and TLS)."""

    url: str
    parts: SplitResult
    host: str
    port: int
    literal: IPAddress | None


def check_url(url: str, *, allow_private: bool, production: bool) -> Target:
    """The URL's shape and, for a literal address, the address; names are resolved and
    checked by ``resolve`` (at save time and at send time)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlNotAllowed(f"The URL cannot be read: {exc}.") from None
    if parts.scheme not in ("https", "http"):
        raise UrlNotAllowed("Webhook URLs must be https (or http outside production).")
    if parts.scheme == "http" and production:
        raise UrlNotAllowed("Webhook URLs must be https in production.")
    if parts.username is not None or parts.password is not None:
        raise UrlNotAllowed("Webhook URLs may not carry a user name or password.")
    raw = parts.hostname
    if not raw:
        raise UrlNotAllowed("The URL has no host.")
    host = raw.lower().rstrip(".")
    literal = parse_ip(host)
    if literal is None and not _HOST_CHARS.fullmatch(host):
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise UrlNotAllowed(f"The host '{raw}' is not a valid name.") from None
        if not _HOST_CHARS.fullmatch(host):
            raise UrlNotAllowed(f"The host '{raw}' is not a valid name.")
    target = Target(
        url=url,
        parts=parts,
        host=host,
        port=port or (443 if parts.scheme == "https" else 80),
        literal=literal,
    )
    if allow_private:
        return target
    if literal is not None:
        reason = refusal(literal)
        if reason:
            raise UrlNotAllowed(f"The host {raw} is {literal}, {reason}.")
    elif host in _LOCAL_NAMES or host.endswith((".localhost", ".local", ".internal")):
        raise UrlNotAllowed(f"The host '{raw}' names this machine or an internal service.")
    return target


class Resolver:
    """Resolves a target's host for sending and checks every address it gets; results
    are kept 30 seconds. The send connects to the checked address, never to a name
    resolved again by someone else."""

    TTL = 30.0
    TIMEOUT = 5.0

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._cache: dict[tuple[str, int], tuple[float, list[IPAddress]]] = {}

    async def resolve(self, target: Target) -> list[IPAddress]:
        if target.literal is not None:
            addresses = [target.literal]
        else:
            key = (target.host, target.port)
            cached = self._cache.get(key)
            if cached is not None and cached[0] > time.monotonic():
                addresses = cached[1]
            else:
                try:
                    async with asyncio.timeout(self.TIMEOUT):
                        infos = await asyncio.get_running_loop().getaddrinfo(
                            target.host, target.port, type=socket.SOCK_STREAM
                        )
                except (OSError, TimeoutError) as exc:
                    raise UrlNotAllowed(
                        f"The host '{target.host}' does not resolve: {exc}."
                    ) from None
                addresses = []
                for info in infos:
                    found = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
                    if found not in addresses:
                        addresses.append(found)
                self._cache[key] = (time.monotonic() + self.TTL, addresses)
        if not self.allow_private:
            for address in addresses:
                reason = refusal(address)
                if reason:
                    raise UrlNotAllowed(
                        f"The host '{target.host}' resolves to {address}, {reason}."
                    )
        return addresses


async def check_resolved(url: str, *, allow_private: bool, production: bool) -> Target:
    """``check_url``, then (unless private addresses are allowed) the addresses a name
    resolves to now; a name that does not resolve yet is accepted (checked at send)."""
    target = check_url(url, allow_private=allow_private, production=production)
    if allow_private or target.literal is not None:
        return target
    try:
        await Resolver(allow_private=False).resolve(target)
    except UrlNotAllowed as exc:
        if "does not resolve" in exc.detail:
            return target
        raise
    return target
