"""
Tests for the connection options the client and the load tester share.
"""

from __future__ import annotations

from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from commandproto._connect import describe_failure, make_endpoint


class MakeEndpointTests(SynchronousTestCase):
    def test_host_and_port(self) -> None:
        endpoint, address = make_endpoint(MemoryReactorClock(), "::1", 4000, None)
        self.assertIsInstance(endpoint, HostnameEndpoint)
        self.assertEqual(address, "::1:4000")

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
