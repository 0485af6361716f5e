"""
Tests for the connection options the client and the load tester share.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from commandproto.client.connect import AddressEndpoint, describe_failure, make_endpoint


class MakeEndpointTests(SynchronousTestCase):
    def test_host_and_port(self) -> None:
        endpoint, address = make_endpoint(MemoryReactorClock(), "h.example", 4, None)
        self.assertIsInstance(endpoint, HostnameEndpoint)
        self.assertEqual(address, "h.example:4")

    def test_literal_address_needs_no_endpoints_module(self) -> None:
        for host in ("127.0.0.1", "::1"):
            reactor = MemoryReactorClock()
            endpoint, address = make_endpoint(reactor, host, 4000, None)
            self.assertIsInstance(endpoint, AddressEndpoint)
            self.assertEqual(address, f"{host}:4000")
            endpoint.connect(Factory.forProtocol(Protocol))
            self.assertEqual(reactor.tcpClients[0][:2], (host, 4000))

    def test_literal_address_connects(self) -> None:
        reactor = MemoryReactorClock()
        endpoint = AddressEndpoint(reactor, "127.0.0.1", 4000)
        results: list[object] = []
        endpoint.connect(Factory.forProtocol(Protocol)).addCallback(results.append)
        factory = reactor.tcpClients[0][2]
        protocol = factory.buildProtocol(None)
        assert isinstance(protocol, Protocol)
        self.assertEqual(results, [])
        protocol.makeConnection(StringTransport())
        self.assertEqual(results, [protocol])
        self.assertIsNotNone(protocol.transport)

    def test_literal_address_failure_and_cancel(self) -> None:
        reactor = MemoryReactorClock()
        endpoint = AddressEndpoint(reactor, "127.0.0.1", 4000)
        failures: list[Failure] = []
        endpoint.connect(Factory.forProtocol(Protocol)).addErrback(failures.append)
        factory = reactor.tcpClients[0][2]
        factory.clientConnectionFailed(
            reactor.connectors[0], Failure(ConnectionRefusedError())
        )
        self.assertTrue(failures[0].check(ConnectionRefusedError))
        cancelled = endpoint.connect(Factory.forProtocol(Protocol))
        cancelled.addErrback(failures.append)
        cancelled.cancel()
        self.assertTrue(failures[1].check(CancelledError))
        self.assertTrue(reactor.connectors[1].stoppedConnecting)

    def test_connect_string_names_itself(self) -> None:
        _, address = make_endpoint(
            MemoryReactorClock(), "ignored", 1, "unix:path=/tmp/x.sock"
        )
        self.assertEqual(address, "unix:path=/tmp/x.sock")

    def test_every_parser_error_is_a_value_error(self) -> None:
        for bad in ("tcp:host=127.0.0.1", "nonsense:1", "tls:h:1:trustRoots=/nope"):
            with self.assertRaises(ValueError) as caught:
                make_endpoint(MemoryReactorClock(), "h", 1, bad)
            self.assertTrue(str(caught.exception).startswith(f"bad endpoint {bad!r}: "))


class DescribeFailureTests(SynchronousTestCase):
    def test_exception_or_failure_alike(self) -> None:
        from twisted.internet.error import ConnectionRefusedError
        from twisted.python.failure import Failure

        self.assertEqual(
            describe_failure(ConnectionRefusedError()),
            describe_failure(Failure(ConnectionRefusedError())),
        )

    def test_other_errors_give_their_message(self) -> None:
        self.assertEqual(describe_failure(OSError("disk on fire")), "disk on fire")
