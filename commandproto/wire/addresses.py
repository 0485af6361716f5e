"""
Addresses as people write them, and as the per-address limit counts them:
shared by the server, its listeners and its operations, none of which need
the others for it.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress

from .codec import escape_controls


def describe_address(address: IAddress | None) -> str:
    """
    Render an address the way people write it, for log lines.

    :param address: a transport's host or peer address.
    :returns: ``tcp:HOST:PORT``, ``tcp6:[HOST]:PORT``, ``unix:PATH`` or the
        address's own ``repr``, control characters escaped.
    """
    if isinstance(address, IPv4Address):
        return f"tcp:{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        # A PROXY v1 header's zone id (fe80::1%zone) is the client's text.
        return f"tcp6:[{escape_controls(address.host)}]:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        # A client chooses its own unix socket name: never let it write
        # control characters into our log.
        return f"unix:{escape_controls(name) if name else '(unnamed)'}"
    return escape_controls(repr(address))


def address_key(address: IAddress | None) -> str | None:
    """
    What ``--max-connections-per-ip`` counts connections by: the IPv4
    address, or the IPv6 address's /64 network (one host's share of IPv6
    addresses); ``None`` (not counted) for unix sockets.
    """
    if isinstance(address, IPv6Address):
        host = address.host.split("%", 1)[0]
        try:
            packed = ipaddress.IPv6Address(host)
        except ValueError:
            return host
        if packed.ipv4_mapped is not None:
            return str(packed.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(packed) >> 64 << 64, 64)))
    if isinstance(address, IPv4Address):
        return address.host
    return None
