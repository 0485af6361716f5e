"""
``--metrics``: the server's counters (:class:`~commandproto._stats.ServerStats`)
in Prometheus's text format at ``/metrics``, with ``prometheus_client``'s
process collectors beside them.

Scrapes run on the reactor's thread, not a thread pool
(``prometheus_client.twisted.MetricsResource`` defers each one to the
reactor's thread pool): the counters are plain integers that the reactor's
thread changes, and reading them there needs no lock.  Importing this module
imports ``prometheus_client`` (the ``metrics`` extra).

The listener shares the reactor with the command server, so nothing its
clients do may cost the commands more than one rendering (about 0.3 ms): it
is a :class:`~commandproto.ops.bounded.BoundedSite` (one request per
connection, each closed :data:`DEADLINE` seconds after it opened, at most
:data:`MAX_CONNECTIONS` at once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IReactorTime,
)
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from ..server.stats import EVENTS, REFUSAL_REASONS, ServerStats
from ..wire.endpoints import AnnouncedEndpoint
from .bounded import BoundedChannel, BoundedSite

log = Logger()

PATH = b"metrics"

#: Seconds a metrics connection may stay open, from accept to close: time
#: for a request and its response, with room to spare for a scraper.
DEADLINE = 10.0

#: Metrics connections open at once; a scraper needs one.
MAX_CONNECTIONS = 16


class StatsCollector(Collector):
    """
    Reads a server's counters at each scrape.
    """

    def __init__(
        self, stats: ServerStats, refresh: Callable[[], None] | None = None
    ) -> None:
        """
        :param refresh: called before each scrape reads ``stats`` (the
            supervisor of workers gathers their numbers into it).
        """
        self._stats = stats
        self._refresh = refresh

    def collect(self) -> Iterator[Metric]:
        if self._refresh is not None:
            self._refresh()
        stats = self._stats
        yield InfoMetricFamily(
            "commandproto", "The server's version.", value={"version": stats.version}
        )
        yield GaugeMetricFamily(
            "commandproto_connections", "Connections open now.", value=stats.open
        )
        yield CounterMetricFamily(
            "commandproto_connections_accepted",
            "Connections accepted.",
            value=stats.accepted,
        )
        refused = CounterMetricFamily(
            "commandproto_connections_refused",
            "Connections refused, by reason.",
            labels=["reason"],
        )
        for reason in sorted({*REFUSAL_REASONS, *stats.refused}):
            refused.add_metric([reason], stats.refused.get(reason, 0))
        yield refused
        commands = CounterMetricFamily(
            "commandproto_commands",
            "Commands answered, by name and outcome; unknown commands count "
            "under the name (unknown).",
            labels=["command", "outcome"],
        )
        for (name, outcome), count in sorted(stats.commands_by_outcome().items()):
            commands.add_metric([name, outcome], count)
        yield commands
        latency = HistogramMetricFamily(
            "commandproto_command_latency_seconds",
            "Seconds from a command's start to its reply, by name.",
            labels=["command"],
        )
        for name, histogram in sorted(stats.latency_by_name().items()):
            latency.add_metric(
                [name], histogram.cumulative(), sum_value=histogram.total
            )
        yield latency
        yield CounterMetricFamily(
            "commandproto_received_bytes", "Bytes read from clients.", stats.bytes_in
        )
        yield CounterMetricFamily(
            "commandproto_sent_bytes", "Bytes written to clients.", stats.bytes_out
        )
        events = CounterMetricFamily(
            "commandproto_client_events",
            "Client misbehaviour and the server's reactions, by kind.",
            labels=["event"],
        )
        for event in sorted({*EVENTS, *stats.events}):
            events.add_metric([event], stats.events.get(event, 0))
        yield events


def registry_for(
    stats: ServerStats, refresh: Callable[[], None] | None = None
) -> CollectorRegistry:
    """
    A registry of the server's counters and the process collectors
    (``process_*``, ``python_info``, ``python_gc_*``).

    :param refresh: as for :class:`StatsCollector`.
    """
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StatsCollector(stats, refresh))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class MetricsResource(Resource):
    """
    Render a registry in the format the scraper asks for, on the reactor's
    thread.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        accept = request.getHeader("accept") or ""
        encoder, content_type = choose_encoder(accept)
        request.setHeader("Content-Type", content_type)
        return encoder(self._registry)


class MetricsSite(BoundedSite):
    """
    ``/metrics``, its connections bounded in number and lifetime
    (:mod:`~commandproto.ops.bounded`).
    """

    def __init__(
        self,
        resource: Resource,
        clock: IReactorTime,
        *,
        max_connections: int = MAX_CONNECTIONS,
        deadline: float = DEADLINE,
    ) -> None:
        super().__init__(
            resource, clock, max_connections=max_connections, deadline=deadline
        )


#: The metrics' connections (what :class:`MetricsSite` builds).
MetricsChannel = BoundedChannel


def metrics_site(
    stats: ServerStats,
    clock: IReactorTime,
    refresh: Callable[[], None] | None = None,
) -> MetricsSite:
    """
    The HTTP site: ``/metrics``, and nothing else.

    :param refresh: as for :class:`StatsCollector`.
    """
    root = Resource()
    root.putChild(PATH, MetricsResource(registry_for(stats, refresh)))
    return MetricsSite(root, clock)


def _announce(address: str) -> None:
    log.info("metrics on {address} at /metrics", address=address)


def metrics_service(
    reactor: IReactorTime,
    description: str,
    stats: ServerStats,
    refresh: Callable[[], None] | None = None,
) -> IService:
    """
    A service that serves the metrics on a Twisted server endpoint.

    :param description: the endpoint string (``tcp:9100:interface=127.0.0.1``).
    :param refresh: as for :class:`StatsCollector`.
    """
    endpoint = AnnouncedEndpoint(serverFromString(reactor, description), _announce)
    service = StreamServerEndpointService(
        endpoint, metrics_site(stats, reactor, refresh)
    )
    service._raiseSynchronously = True
    return service
