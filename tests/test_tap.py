"""
Tests for the twistd plugin and ``commandproto.tap``.
"""

from __future__ import annotations

import re

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

from commandproto import tap
from commandproto.commands.table import Command, CommandTable, Reply

SHARED = CommandTable()
SHARED.add(Command("ping", lambda: Reply("pong")))
IN_MEMORY = CommandTable(per_process_state=True)
IN_MEMORY.add(Command("count", lambda: Reply("1")))


def parse(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    """
    ``twistd commandserver`` options.
    """

    def test_default_is_loopback_12345(self) -> None:
        self.assertEqual(parse()["listen"], ["tcp:12345:interface=127.0.0.1"])

    def test_listen_replaces_default(self) -> None:
        self.assertEqual(parse("--listen", "tcp:0")["listen"], ["tcp:0"])

    def test_listen_repeatable(self) -> None:
        options = parse("--listen", "tcp:0", "--listen", "unix:/tmp/x.sock")
        self.assertEqual(options["listen"], ["tcp:0", "unix:/tmp/x.sock"])

    def test_bad_endpoint_is_one_line(self) -> None:
        with self.assertRaises(SystemExit) as raised:
            parse("--listen", "nonsense:1")
        self.assertEqual(
            raised.exception.code,
            "twistd commandserver: bad --listen endpoint 'nonsense:1': Unknown "
            "endpoint type: 'nonsense' (examples: tcp:12345, "
            "unix:/run/commandproto.sock; see --help)",
        )

    def test_legacy_listen_repeatable(self) -> None:
        options = parse("--legacy-listen", "tcp:0", "--legacy-listen", "tcp6:0")
        self.assertEqual(options["legacy-listen"], ["tcp:0", "tcp6:0"])
        self.assertEqual(options["listen"], ["tcp:12345:interface=127.0.0.1"])

    def test_bad_legacy_endpoint_is_one_line(self) -> None:
        with self.assertRaises(SystemExit) as raised:
            parse("--legacy-listen", "tcp:abc")
        self.assertIn("bad --legacy-listen endpoint 'tcp:abc'", str(raised.exception))


class MakeServiceTests(SynchronousTestCase):
    """
    ``makeService`` builds one listener per endpoint.
    """

    def test_one_listener_per_endpoint(self) -> None:
        service = tap.makeService(parse("--listen", "tcp:0", "--listen", "tcp6:0"))
        listeners = [s for s in service if isinstance(s, StreamServerEndpointService)]  # type: ignore[attr-defined]
        self.assertEqual(len(listeners), 2)

    def test_legacy_listeners_beside_framed_ones(self) -> None:
        service = tap.makeService(
            parse("--listen", "tcp:0", "--legacy-listen", "tcp:0")
        )
        listeners = [s for s in service if isinstance(s, StreamServerEndpointService)]  # type: ignore[attr-defined]
        self.assertEqual(len(listeners), 2)
        self.assertEqual(len({id(s.factory) for s in listeners}), 1)

    def test_listeners_share_one_factory(self) -> None:
        service = tap.makeService(parse("--listen", "tcp:0", "--listen", "tcp6:0"))
        factories = {
            id(s.factory)
            for s in service  # type: ignore[attr-defined]
            if hasattr(s, "factory")
        }
        self.assertEqual(len(factories), 1)


class HelpTests(SynchronousTestCase):
    """
    ``twistd commandserver --help`` reads as prose.
    """

    def test_no_runs_of_spaces_inside_descriptions(self) -> None:
        for line in str(tap.Options()).splitlines():
            text = line.strip()
            if text.startswith("-"):
                # The option's column, then its description.
                text = re.split(" {2,}", text, maxsplit=1)[-1]
            self.assertNotIn("  ", text, line)


class PerAddressLimitTests(SynchronousTestCase):
    """
    ``--max-connections-per-ip`` is opt-in: clients behind one NAT, load
    balancer or connection pool share one address.
    """

    def factory(self, *argv: str) -> object:
        service = tap.makeService(parse("--listen", "tcp:0", *argv))
        (factory,) = {
            s.factory
            for s in service  # type: ignore[attr-defined]
            if hasattr(s, "factory")
        }
        return factory

    def test_no_limit_by_default(self) -> None:
        factory = self.factory()
        self.assertIsNone(factory.max_connections_per_address)  # type: ignore[attr-defined]

    def test_limit_when_asked(self) -> None:
        factory = self.factory("--max-connections-per-ip", "20")
        self.assertEqual(factory.max_connections_per_address, 20)  # type: ignore[attr-defined]


class WorkersAsOneServerTests(SynchronousTestCase):
    """
    What ``--workers`` would silently split is refused at start-up, in one
    line.
    """

    def refusal(self, *argv: str) -> str:
        with self.assertRaises(SystemExit) as raised:
            parse(*argv)
        return str(raised.exception.code)

    def test_per_process_state_refused_with_workers(self) -> None:
        self.assertEqual(
            self.refusal("--workers", "2", "--commands", "tests.test_tap:IN_MEMORY"),
            "twistd commandserver: --commands tests.test_tap:IN_MEMORY keeps its "
            "state in each process, so --workers 2 would split it: serve it "
            "with --workers 1, or keep the state in an external store",
        )

    def test_per_process_state_served_by_one_worker(self) -> None:
        options = parse("--commands", "tests.test_tap:IN_MEMORY")
        self.assertIn("count", options["table"])

    def test_shared_state_served_by_workers(self) -> None:
        options = parse("--workers", "2", "--commands", "tests.test_tap:SHARED")
        self.assertIn("ping", options["table"])

    def test_connection_limit_below_the_worker_count(self) -> None:
        self.assertEqual(
            self.refusal("--workers", "3", "--max-connections", "1"),
            "twistd commandserver: --max-connections 1 cannot be shared among 3 "
            "workers (each enforces its own share): give at least 3, or fewer "
            "--workers",
        )

    def test_per_address_limit_below_the_worker_count(self) -> None:
        self.assertIn(
            "--max-connections-per-ip 2 cannot be shared among 3 workers",
            self.refusal("--workers", "3", "--max-connections-per-ip", "2"),
        )

    def test_limits_at_least_the_worker_count(self) -> None:
        options = parse("--workers", "3", "--max-connections", "3")
        self.assertEqual(options["max-connections"], 3)


class PluginTests(SynchronousTestCase):
    """
    The plugin is discoverable the way twistd finds it.
    """

    def test_commandserver_plugin_found(self) -> None:
        names = [maker.tapname for maker in getPlugins(IServiceMaker)]
        self.assertIn("commandserver", names)

    def test_plugin_points_at_tap(self) -> None:
        (maker,) = [
            m for m in getPlugins(IServiceMaker) if m.tapname == "commandserver"
        ]
        self.assertIs(maker.options, tap.Options)


class NumberOptionTests(SynchronousTestCase):
    """
    Number options reject what cannot be a limit.
    """

    def test_nan_rejected(self) -> None:
        self.assertRaises(SystemExit, parse, "--idle-timeout", "nan")

    def test_negative_rejected(self) -> None:
        self.assertRaises(SystemExit, parse, "--shutdown-timeout", "-1")

    def test_zero_connections_rejected(self) -> None:
        self.assertRaises(SystemExit, parse, "--max-connections", "0")

    def test_values_reach_options(self) -> None:
        options = parse("--idle-timeout", "2.5", "--max-line-length", "100")
        self.assertEqual(
            (options["idle-timeout"], options["max-line-length"]), (2.5, 100)
        )


class EveryOptionTests(SynchronousTestCase):
    """
    Every option is well formed: twistd reads each as five fields.
    """

    def test_five_fields_each(self) -> None:
        self.assertEqual(
            [len(option) for option in tap.Options.optParameters],  # type: ignore[arg-type]
            [5] * len(tap.Options.optParameters),
        )


class ListeningLineTests(SynchronousTestCase):
    """
    The line that says where the server listens says what it serves there:
    a TLS or PROXY listener does not log as plain ``tcp:``.
    """

    def test_what_each_kind_serves(self) -> None:
        self.assertEqual(
            [
                tap.served_as(description)
                for description in (
                    "tcp:12345",
                    "unix:/run/s.sock",
                    "ssl:12345:privateKey=k.pem",
                    "mtls:12345:privateKey=k.pem:caCerts=ca.pem",
                    "proxy:tcp:12345",
                    "proxy:ssl:12345:privateKey=k.pem",
                )
            ],
            ["", "", "TLS", "mutual TLS", "PROXY protocol", "PROXY protocol, TLS"],
        )

    def test_the_line_names_it(self) -> None:
        from twisted.internet.endpoints import TCP4ServerEndpoint
        from twisted.internet.protocol import Factory, Protocol
        from twisted.internet.testing import MemoryReactor

        from commandproto.server import LoggingServerEndpoint

        from ._helpers import LogCapture

        logged = LogCapture(self)
        reactor = MemoryReactor()
        endpoint = LoggingServerEndpoint(TCP4ServerEndpoint(reactor, 4443), what="TLS")
        endpoint.listen(Factory.forProtocol(Protocol))
        self.assertEqual(
            [m for m in logged.messages() if m.startswith("listening on")],
            ["listening on tcp:0.0.0.0:4443 (TLS)"],
        )
