"""
The ``--metrics`` listener cannot stall the command server or grow without
bound, whatever its clients do: one request per connection, a deadline per
connection, a cap on connections.  In memory, with a Clock.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from commandproto.ops.metrics import (
    DEADLINE,
    MAX_CONNECTIONS,
    MetricsChannel,
    MetricsSite,
    metrics_site,
)
from commandproto.server.stats import ServerStats

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


class CountingStats(ServerStats):
    """
    Counts how often a scrape reads the counters.
    """

    reads = 0

    def commands_by_outcome(self) -> dict[tuple[str, str], int]:
        self.reads += 1
        return super().commands_by_outcome()


class AbortableTransport(StringTransport):
    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


def connect(site: MetricsSite) -> tuple[MetricsChannel, AbortableTransport]:
    channel = site.buildProtocol(PEER)
    assert isinstance(channel, MetricsChannel)
    transport = AbortableTransport(peerAddress=PEER)
    channel.makeConnection(transport)
    return channel, transport


class OneRequestTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.stats = CountingStats()
        self.site = metrics_site(self.stats, self.clock)

    def test_a_scrape_is_answered_and_closed(self) -> None:
        channel, transport = connect(self.site)
        channel.dataReceived(GET)
        response = transport.value()
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertIn(b"\r\nConnection: close\r\n", response)
        self.assertIn(b"commandproto_connections_accepted_total", response)
        self.assertTrue(transport.disconnecting)

    def test_pipelined_requests_render_once(self) -> None:
        """
        A thousand requests in one read cost one rendering and one response:
        the rest are dropped with the connection.
        """
        channel, transport = connect(self.site)
        before = self.stats.reads
        channel.dataReceived(GET * 1000)
        self.assertEqual(self.stats.reads - before, 1)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 1)
        self.assertTrue(transport.disconnecting)


class DeadlineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.site = metrics_site(ServerStats(), self.clock)

    def test_a_trickled_header_does_not_keep_it_open(self) -> None:
        channel, transport = connect(self.site)
        for byte in b"GET /metrics HTTP/1.1\r\n":
            channel.dataReceived(bytes([byte]))
            self.clock.advance(DEADLINE / 40)
        self.assertFalse(transport.aborted)
        self.clock.advance(DEADLINE)
        self.assertTrue(transport.aborted)

    def test_a_client_that_never_reads_is_closed_at_the_deadline(self) -> None:
        channel, transport = connect(self.site)
        channel.dataReceived(GET)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.aborted)
        self.clock.advance(DEADLINE)
        self.assertTrue(transport.aborted)

    def test_a_closed_connection_leaves_no_timer(self) -> None:
        channel, _ = connect(self.site)
        channel.dataReceived(GET)
        channel.connectionLost()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.site.open, 0)


class CapTests(SynchronousTestCase):
    def test_past_the_cap_a_connection_is_closed_on_accept(self) -> None:
        site = metrics_site(ServerStats(), Clock())
        channels = [connect(site)[0] for _ in range(MAX_CONNECTIONS)]
        self.assertIsNone(site.buildProtocol(PEER))
        channels[0].connectionLost()
        self.assertIsNotNone(site.buildProtocol(PEER))
