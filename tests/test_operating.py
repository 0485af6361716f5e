"""
Operating the server: JSON logs and level filtering, the Prometheus
collector and its resource, sd_notify, and the options that turn them on.
No reactor, no sockets (but one datagram socket pair for sd_notify).
"""

from __future__ import annotations

import io
import json
import os
import socket
import tempfile

from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from commandproto import tap
from commandproto.ops.logs import (
    LoggingService,
    event_as_record,
    format_json_line,
    log_observer,
)
from commandproto.ops.metrics import MetricsResource, StatsCollector, registry_for
from commandproto.ops.systemd import (
    NotifyService,
    notify_address,
    send_notification,
    watchdog_interval,
)
from commandproto.server.stats import ServerStats


def event(**fields: object) -> dict[str, object]:
    return {
        "log_format": "[{conn}] connection from {peer}",
        "log_level": LogLevel.info,
        "log_namespace": "commandproto.server.protocol",
        "log_time": 0.0,
        **fields,
    }


class JSONLogTests(SynchronousTestCase):
    """
    A JSON log line is one object carrying the event's fields as keys.
    """

    def test_fields_are_keys(self) -> None:
        record = json.loads(format_json_line(event(conn="1f", peer="tcp:h:1")))
        self.assertEqual(
            record,
            {
                "time": "1970-01-01T00:00:00.000+00:00",
                "level": "info",
                "namespace": "commandproto.server.protocol",
                "message": "[1f] connection from tcp:h:1",
                "conn": "1f",
                "peer": "tcp:h:1",
            },
        )

    def test_one_line(self) -> None:
        line = format_json_line(event(conn="1", peer="unix:a\nb"))
        self.assertEqual(line.count("\n"), 1)
        self.assertTrue(line.endswith("}\n"))

    def test_objects_become_text(self) -> None:
        record = event_as_record(event(conn=1, peer=object(), seconds=1.5))
        self.assertIsInstance(record["peer"], str)
        self.assertEqual((record["conn"], record["seconds"]), (1, 1.5))

    def test_milliseconds_rounded_as_in_the_message(self) -> None:
        slow = {
            **event(),
            "log_format": "slow command from {peer}: {ms:.1f} ms",
            "peer": "tcp:h:1",
            "ms": 2001.6372918,
        }
        record = json.loads(format_json_line(slow))
        self.assertEqual(
            (record["ms"], record["message"]),
            (2001.6, "slow command from tcp:h:1: 2001.6 ms"),
        )

    def test_failure_carries_its_traceback(self) -> None:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            failure = Failure()
        record = event_as_record(event(log_failure=failure, conn="1", peer="p"))
        self.assertIn("RuntimeError: boom", record["traceback"])

    def test_field_cannot_replace_the_message(self) -> None:
        record = event_as_record(event(conn="1", peer="p", message="x"))
        self.assertEqual(record["message"], "[1] connection from p")


class LevelTests(SynchronousTestCase):
    """
    ``--log-level`` drops what is below it.
    """

    def written(self, level: str, log_format: str = "text") -> str:
        out = io.StringIO()
        observer = log_observer(out, log_format, level)
        for each in (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error):
            observer(event(conn=each.name, peer="p", log_level=each))
        return out.getvalue()

    def test_info_drops_debug(self) -> None:
        text = self.written("info")
        self.assertNotIn("[debug]", text)
        self.assertIn("[info]", text)

    def test_warn_keeps_warn_and_error(self) -> None:
        lines = self.written("warn", "json").splitlines()
        self.assertEqual(
            [json.loads(line)["level"] for line in lines], ["warn", "error"]
        )

    def test_text_is_twistds_format(self) -> None:
        self.assertIn(
            "[commandproto.server.protocol#info] [info] connection from p",
            self.written("debug"),
        )


class LoggingServiceTests(SynchronousTestCase):
    """
    The top service hands its observer to the application it joins.
    """

    def test_sets_the_applications_observer(self) -> None:
        from twisted.application.service import Application
        from twisted.logger import ILogObserver

        observer = log_observer(io.StringIO())
        application = Application("test")
        LoggingService(observer).setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), observer)

    def test_none_keeps_twistds(self) -> None:
        from twisted.application.service import Application
        from twisted.logger import ILogObserver

        application = Application("test")
        LoggingService(None).setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver, None))


class CollectorTests(SynchronousTestCase):
    """
    The collector reads the server's counters at each scrape.
    """

    def samples(self, stats: ServerStats) -> dict[tuple[str, tuple[str, ...]], float]:
        found = {}
        for family in StatsCollector(stats).collect():
            for sample in family.samples:
                found[(sample.name, tuple(sorted(sample.labels.values())))] = (
                    sample.value
                )
        return found

    def test_counters(self) -> None:
        stats = ServerStats(wall=lambda: 0.0, server_version="1.2")
        stats.accepted, stats.open, stats.bytes_in, stats.bytes_out = 3, 2, 10, 20
        stats.cached[b"Hello"] = 4
        stats.command_done("(unknown)", "unknown", None)
        stats.command_done("get", "ok", 0.002)
        stats.refuse("max_connections")
        stats.event("invalid_utf8")
        samples = self.samples(stats)
        self.assertEqual(samples[("commandproto_connections", ())], 2)
        self.assertEqual(samples[("commandproto_connections_accepted_total", ())], 3)
        self.assertEqual(samples[("commandproto_commands_total", ("Hello", "ok"))], 4)
        self.assertEqual(
            samples[("commandproto_commands_total", ("(unknown)", "unknown"))], 1
        )
        self.assertEqual(
            samples[("commandproto_connections_refused_total", ("max_connections",))],
            1,
        )
        self.assertEqual(
            samples[("commandproto_connections_refused_total", ("shutting_down",))],
            0,
        )
        self.assertEqual(
            samples[("commandproto_client_events_total", ("invalid_utf8",))], 1
        )
        self.assertEqual(
            samples[("commandproto_command_latency_seconds_bucket", ("0.0025", "get"))],
            1,
        )
        self.assertEqual(samples[("commandproto_received_bytes_total", ())], 10)
        self.assertEqual(samples[("commandproto_sent_bytes_total", ())], 20)
        self.assertEqual(samples[("commandproto_info", ("1.2",))], 1)


class ResourceTests(SynchronousTestCase):
    """
    ``/metrics`` renders on the calling thread, in the format asked for.
    """

    def test_text_format(self) -> None:
        stats = ServerStats(wall=lambda: 0.0)
        stats.accepted = 7
        request = DummyRequest([b""])
        body = MetricsResource(registry_for(stats)).render_GET(request)  # type: ignore[arg-type]
        self.assertIn(b"commandproto_connections_accepted_total 7.0\n", body)
        self.assertIn(b"process_cpu_seconds_total", body)
        content_type = request.responseHeaders.getRawHeaders(b"content-type") or []
        self.assertTrue(content_type[0].startswith(b"text/plain"))

    def test_openmetrics_when_asked(self) -> None:
        request = DummyRequest([b""])
        request.requestHeaders.setRawHeaders(
            b"accept", [b"application/openmetrics-text; version=1.0.0"]
        )
        body = MetricsResource(registry_for(ServerStats())).render_GET(request)  # type: ignore[arg-type]
        self.assertTrue(body.endswith(b"# EOF\n"))


class NotifyTests(SynchronousTestCase):
    """
    sd_notify: READY=1 once running, STOPPING=1 when the drain begins,
    WATCHDOG=1 pings; nothing without NOTIFY_SOCKET.
    """

    def service(self, **environ: str) -> tuple[NotifyService, list[str], Clock]:
        sent: list[str] = []
        clock = Clock()
        reactor = FakeReactor(clock)
        service = NotifyService(
            reactor,  # type: ignore[arg-type]
            environ={"NOTIFY_SOCKET": "/run/notify", **environ},
            send=lambda address, message: sent.append(message),
        )
        return service, sent, clock

    def test_ready_once_running(self) -> None:
        service, sent, _ = self.service()
        service.startService()
        self.assertEqual(sent, ["READY=1"])

    def test_stopping(self) -> None:
        service, sent, _ = self.service()
        service.startService()
        service.stopService()
        self.assertEqual(sent, ["READY=1", "STOPPING=1"])

    def test_watchdog_pings_at_half_the_interval(self) -> None:
        service, sent, clock = self.service(WATCHDOG_USEC="2000000")
        service.startService()
        clock.advance(1)
        clock.advance(1)
        self.assertEqual(sent, ["READY=1", "WATCHDOG=1", "WATCHDOG=1", "WATCHDOG=1"])

    def test_watchdog_for_another_process(self) -> None:
        self.assertIsNone(
            watchdog_interval({"WATCHDOG_USEC": "5", "WATCHDOG_PID": "1"}, 2)
        )

    def test_nothing_without_notify_socket(self) -> None:
        sent: list[str] = []
        service = NotifyService(
            FakeReactor(Clock()),  # type: ignore[arg-type]
            environ={},
            send=lambda address, message: sent.append(message),
        )
        service.startService()
        service.stopService()
        self.assertEqual(sent, [])

    def test_abstract_namespace(self) -> None:
        self.assertEqual(notify_address({"NOTIFY_SOCKET": "@sd/x"}), "\0sd/x")

    def test_failure_logged_once(self) -> None:
        from ._helpers import LogCapture

        logged = LogCapture(self)

        def refuse(address: str, message: str) -> None:
            raise ConnectionRefusedError(111, "Connection refused")

        service = NotifyService(
            FakeReactor(Clock()),  # type: ignore[arg-type]
            environ={"NOTIFY_SOCKET": "/nowhere"},
            send=refuse,
        )
        service.startService()
        service.stopService()
        self.assertEqual(
            logged.messages(),
            ["cannot notify systemd at NOTIFY_SOCKET=/nowhere: Connection refused"],
        )

    def test_sends_a_datagram(self) -> None:
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "notify")
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
                receiver.bind(path)
                send_notification(path, "READY=1")
                self.assertEqual(receiver.recv(100), b"READY=1")


class FakeReactor:
    """
    ``callWhenRunning`` runs at once; time is a Clock's.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.callLater = clock.callLater
        self.seconds = clock.seconds

    def callWhenRunning(self, f: object, *args: object) -> None:
        f(*args)  # type: ignore[operator]


class OptionsTests(SynchronousTestCase):
    """
    The options that turn these on, and their one-line failures.
    """

    def parse(self, *args: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(args))
        return options

    def test_defaults(self) -> None:
        options = self.parse()
        self.assertEqual(
            (
                options["log-format"],
                options["log-level"],
                options["slow-log-threshold"],
                options["metrics"],
            ),
            ("text", "info", 100.0, None),
        )

    def test_bad_format(self) -> None:
        error = self.assertRaises(SystemExit, self.parse, "--log-format", "xml")
        self.assertIn("--log-format takes one of text, json", str(error))

    def test_bad_level(self) -> None:
        error = self.assertRaises(SystemExit, self.parse, "--log-level", "loud")
        self.assertIn("--log-level takes one of", str(error))

    def test_bad_metrics_endpoint(self) -> None:
        error = self.assertRaises(SystemExit, self.parse, "--metrics", "nope:1")
        self.assertTrue(
            str(error).startswith(
                "twistd commandserver: bad --metrics endpoint 'nope:1': "
            )
        )

    def test_metrics_without_prometheus_client(self) -> None:
        import sys

        saved = sys.modules.get("prometheus_client")
        sys.modules["prometheus_client"] = None  # type: ignore[assignment]
        self.addCleanup(sys.modules.__setitem__, "prometheus_client", saved)  # type: ignore[arg-type]
        error = self.assertRaises(SystemExit, self.parse, "--metrics", "tcp:0")
        self.assertEqual(
            str(error),
            "twistd commandserver: --metrics needs prometheus_client: "
            "pip install 'commandproto[metrics]'",
        )

    def test_json_with_syslog_refused(self) -> None:
        options = tap.Options()
        options.parent = {"syslog": True}  # type: ignore[assignment]
        error = self.assertRaises(
            SystemExit, options.parseOptions, ["--log-format", "json"]
        )
        self.assertIn("do not work with twistd --syslog", str(error))

    def test_slow_log_threshold_reaches_factory(self) -> None:
        service = tap.makeService(
            self.parse("--listen", "tcp:0", "--slow-log-threshold", "250")
        )
        factory = next(s for s in service if hasattr(s, "factory")).factory  # type: ignore[attr-defined]
        self.assertEqual(factory.slow_threshold, 0.25)
        self.assertFalse(factory.stats.timing)

    def test_slow_log_off(self) -> None:
        service = tap.makeService(
            self.parse("--listen", "tcp:0", "--slow-log-threshold", "0")
        )
        factory = next(s for s in service if hasattr(s, "factory")).factory  # type: ignore[attr-defined]
        self.assertIsNone(factory.slow_threshold)

    def test_metrics_turn_timing_on(self) -> None:
        service = tap.makeService(
            self.parse("--listen", "tcp:0", "--metrics", "tcp:0:interface=127.0.0.1")
        )
        factory = next(s for s in service if hasattr(s, "factory")).factory  # type: ignore[attr-defined]
        self.assertTrue(factory.stats.timing)

    def test_default_keeps_twistds_observer(self) -> None:
        service = tap.makeService(self.parse("--listen", "tcp:0"))
        self.assertIsNone(service.observer)  # type: ignore[attr-defined]

    def test_json_installs_ours(self) -> None:
        service = tap.makeService(
            self.parse("--listen", "tcp:0", "--log-format", "json")
        )
        self.assertIsNotNone(service.observer)  # type: ignore[attr-defined]


class ContainerTests(SynchronousTestCase):
    """
    The Dockerfile runs what the manual (docs/howto/operating.rst) says it
    runs (CI cannot build it).
    """

    def setUp(self) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(root, "Dockerfile")) as f:
            self.dockerfile = f.read().replace("\\\n", " ")
        with open(os.path.join(root, "docs", "howto", "operating.rst")) as f:
            self.manual = f.read()

    def instruction(self, name: str) -> str:
        [line] = [
            line[len(name) :].strip()
            for line in self.dockerfile.splitlines()
            if line.startswith(name + " ")
        ]
        return line

    def exec_form(self, text: str) -> list[str]:
        words: list[str] = json.loads(text)
        return words

    def test_server_command_documented(self) -> None:
        command = self.exec_form(self.instruction("ENTRYPOINT")) + self.exec_form(
            self.instruction("CMD")
        )
        self.assertIn("\n    " + " ".join(command) + "\n", self.manual)
        self.assertIn("tcp:12345", command)

    def test_health_check_documented(self) -> None:
        check = self.instruction("HEALTHCHECK")
        words = self.exec_form(check[check.index("CMD") + 3 :].strip())
        self.assertEqual(
            words, ["python", "-m", "commandproto.client", "-e", "Are you there?"]
        )
        self.assertIn(
            '\n    python -m commandproto.client -e "Are you there?"\n', self.manual
        )

    def test_stop_signal_and_user(self) -> None:
        self.assertEqual(self.instruction("STOPSIGNAL"), "SIGTERM")
        self.assertNotEqual(self.instruction("USER"), "root")

    def test_build_and_run_documented(self) -> None:
        self.assertIn("\n    docker build -t commandproto .\n", self.manual)
        self.assertIn("\n    docker run ", self.manual)

    def test_drain_fits_dockers_grace(self) -> None:
        command = self.exec_form(self.instruction("CMD"))
        timeout = float(command[command.index("--shutdown-timeout") + 1])
        self.assertLess(timeout, 10)


class UnitFileTests(SynchronousTestCase):
    """
    The systemd units adopt the socket by the name the socket unit gives it,
    and say they are ready.
    """

    def read(self, name: str) -> str:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(root, "contrib", "systemd", name)) as f:
            return f.read()

    def test_socket_name_matches(self) -> None:
        self.assertIn(
            "FileDescriptorName=commandproto", self.read("commandproto.socket")
        )
        self.assertIn(
            "--listen systemd:domain=INET:name=commandproto",
            self.read("commandproto.service"),
        )

    def test_notify_and_hardening(self) -> None:
        service = self.read("commandproto.service")
        for setting in (
            "Type=notify",
            "DynamicUser=yes",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "WatchdogSec=",
        ):
            self.assertIn("\n" + setting, service)
