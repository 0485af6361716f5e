"""
The test helpers of ``commandproto.testing``, and the ``command_server``
pytest fixture that commandproto installs as a pytest plugin.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase

from commandproto import CLOSING, GREETING, CommandTable, Session
from commandproto.testing import CommandTester


def peer_table() -> CommandTable:
    table = CommandTable()

    @table.command("whoami")
    def whoami(session: Session) -> str:
        return session.peer

    return table


class CommandTesterTests(SynchronousTestCase):
    """
    An in-memory server serves the table beside the built-in commands.
    """

    def test_builtins_are_served(self) -> None:
        client = CommandTester().connect()
        self.assertEqual(client.request("Hello"), GREETING)

    def test_table_is_served(self) -> None:
        client = CommandTester(peer_table()).connect()
        self.assertEqual(client.request("whoami"), "tcp:127.0.0.1:40000")

    def test_each_connection_has_its_own_peer(self) -> None:
        tester = CommandTester(peer_table())
        tester.connect()
        self.assertEqual(tester.connect().request("whoami"), "tcp:127.0.0.1:40001")

    def test_replies_are_taken_once(self) -> None:
        client = CommandTester().connect()
        client.send("Hello", "nope")
        self.assertEqual(client.replies(), [GREETING, "Unknown command."])
        self.assertEqual(client.replies(), [])

    def test_request_insists_on_one_reply(self) -> None:
        client = CommandTester().connect()
        client.send("Hello")
        self.assertRaises(AssertionError, client.request, "Hello")

    def test_send_refuses_more_than_a_line(self) -> None:
        client = CommandTester().connect()
        self.assertRaises(ValueError, client.send, "Hello\nquit")

    def test_send_bytes_as_a_misbehaving_client(self) -> None:
        client = CommandTester().connect()
        client.send_bytes(b"\xff\nHel")
        client.send_bytes(b"lo\r\n")
        self.assertEqual(client.replies(), ["Error: line is not valid UTF-8", GREETING])

    def test_quit_closes(self) -> None:
        client = CommandTester().connect()
        self.assertEqual(client.request("quit"), CLOSING)
        self.assertTrue(client.closed)
        self.assertRaises(RuntimeError, client.send, "Hello")

    def test_no_idle_timeout_by_default(self) -> None:
        tester = CommandTester()
        client = tester.connect()
        tester.advance(10**6)
        self.assertFalse(client.closed)


def test_fixture_makes_testers(command_server: Callable[..., CommandTester]) -> None:
    """
    The pytest fixture, found through commandproto's ``pytest11`` entry
    point, makes testers with the tables and settings given.
    """
    server = command_server(peer_table(), command_timeout=None)
    assert server.factory.command_timeout is None
    assert server.connect().request("whoami") == "tcp:127.0.0.1:40000"
