"""Which network targets outbound requests may reach: public addresses only (API.md §5, §6a)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket


class AddressRefused(Exception):
    """The host does not resolve, or resolves to a loopback, private or other non-public address."""


def is_public(address: str) -> bool:
    """Whether one IP address is a public unicast address."""
    ip = ipaddress.ip_address(address)
    return not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
    )


async def public_addresses(host: str, port: int) -> list[str]:
    """Resolve `host`; return its addresses if every one is public, else raise AddressRefused."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise AddressRefused(f"cannot resolve {host}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    # Every address is checked, not just the first: the client may connect to any of them.
    if not addresses or not all(is_public(address) for address in addresses):
        raise AddressRefused(f"{host} resolves to a non-public address")
    return addresses
