"""
Server endpoints that say where they listen: the address a ``tcp:0`` got
from the OS is known only once it listens.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from zope.interface import implementer

from .addresses import describe_address


@implementer(IStreamServerEndpoint)
class AnnouncedEndpoint:
    """
    Wrap a server endpoint so that, once it listens, ``announce`` gets the
    address it listens on, as :func:`~commandproto.wire.addresses.describe_address`
    writes it (each listener logs it in its own words).
    """

    def __init__(
        self, endpoint: IStreamServerEndpoint, announce: Callable[[str], None]
    ) -> None:
        self._endpoint = endpoint
        self._announce = announce

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        def listening(port: IListeningPort) -> IListeningPort:
            self._announce(describe_address(port.getHost()))
            return port

        return self._endpoint.listen(factory).addCallback(listening)
