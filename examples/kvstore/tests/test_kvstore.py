"""
Tests for the key-value commands, served in memory by commandproto's test
helpers: the ``command_server`` pytest fixture (installed with commandproto)
or :class:`commandproto.testing.CommandTester` itself.  Time is a
:class:`~twisted.internet.task.Clock`, moved by ``advance()``: no sockets, no
sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

import kvstore
import pytest
from kvstore import make_commands

from commandproto import CommandTable, parse_help
from commandproto.testing import CommandTester, TesterConnection

ServerMaker = Callable[..., CommandTester]

NAMES = ["set", "get", "del", "incr", "wait", "select", "whoami"]


@pytest.fixture
def server(command_server: ServerMaker) -> CommandTester:
    """
    A server over a fresh, empty store.
    """
    return command_server(make_commands())


@pytest.fixture
def client(server: CommandTester) -> TesterConnection:
    """
    One client of :func:`server`.
    """
    return server.connect()


# set and get


def test_set_answers_ok(client: TesterConnection) -> None:
    assert client.request("set greeting hello") == "OK"


def test_get_answers_the_value_verbatim(client: TesterConnection) -> None:
    client.request("set greeting hello,  world ")
    assert client.request("get greeting") == "hello,  world "


def test_set_replaces_the_value(client: TesterConnection) -> None:
    client.request("set k first")
    client.request("set k second")
    assert client.request("get k") == "second"


def test_get_missing_key(client: TesterConnection) -> None:
    assert client.request("get nothing") == "Error: no such key"


def test_stray_cr_at_the_end_is_not_stored(client: TesterConnection) -> None:
    # commandproto drops a CR before the line's CRLF from the arguments: no
    # reply could carry it back.
    client.send_bytes(b"set k v\r\r\n")
    assert client.replies() == ["OK"]
    assert client.request("get k") == "v"


def test_connections_share_the_store(server: CommandTester) -> None:
    first, second = server.connect(), server.connect()
    first.request("set k shared")
    assert second.request("get k") == "shared"


def test_tables_have_their_own_stores(command_server: ServerMaker) -> None:
    command_server(make_commands()).connect().request("set k one")
    other = command_server(make_commands()).connect()
    assert other.request("get k") == "Error: no such key"


# del


def test_del_answers_how_many_existed(client: TesterConnection) -> None:
    client.request("set a 1")
    client.request("set b 2")
    assert client.request("del a b c") == "2"


def test_del_deletes(client: TesterConnection) -> None:
    client.request("set a 1")
    client.request("del a")
    assert client.request("get a") == "Error: no such key"


def test_del_counts_a_repeated_key_once(client: TesterConnection) -> None:
    client.request("set a 1")
    assert client.request("del a a") == "1"


def test_del_missing_key(client: TesterConnection) -> None:
    assert client.request("del nothing") == "0"


# incr


def test_incr_counts_from_zero(client: TesterConnection) -> None:
    assert client.request("incr n") == "1"
    assert client.request("incr n") == "2"
    assert client.request("get n") == "2"


def test_incr_negative(client: TesterConnection) -> None:
    client.request("set n -5")
    assert client.request("incr n") == "-4"


@pytest.mark.parametrize(
    "value", ["abc", "1.5", "1_000", "+1", "1 ", "\u0661", "9223372036854775808"]
)
def test_incr_refuses_a_non_integer(client: TesterConnection, value: str) -> None:
    client.request(f"set n {value}")
    assert client.request("incr n") == "Error: value is not an integer"
    assert client.request("get n") == value


def test_incr_refuses_to_overflow(client: TesterConnection) -> None:
    client.request("set n 9223372036854775807")
    assert client.request("incr n") == "Error: increment would overflow"
    assert client.request("get n") == "9223372036854775807"


# wait


def test_wait_answers_once_the_time_has_passed(
    server: CommandTester, client: TesterConnection
) -> None:
    client.send("wait 1.5")
    assert client.replies() == []
    server.advance(1.4)
    assert client.replies() == []
    server.advance(0.1)
    assert client.replies() == ["waited 1.5"]


def test_wait_holds_later_replies_in_order(
    server: CommandTester, client: TesterConnection
) -> None:
    client.request("set x 1")
    client.send("wait 1", "get x")
    assert client.replies() == []
    server.advance(1)
    assert client.replies() == ["waited 1", "1"]


def test_requests_after_wait_run_after_it(server: CommandTester) -> None:
    waiting, other = server.connect(), server.connect()
    waiting.send("wait 1", "get x")
    other.request("set x set during the wait")
    server.advance(1)
    assert waiting.replies() == ["waited 1", "set during the wait"]


def test_other_connections_do_not_wait(server: CommandTester) -> None:
    waiting, other = server.connect(), server.connect()
    waiting.send("wait 1")
    assert other.request("set x 1") == "OK"
    assert waiting.replies() == []


@pytest.mark.parametrize("seconds", ["-1", "3600.5", "1e9"])
def test_wait_refuses_out_of_range(client: TesterConnection, seconds: str) -> None:
    assert client.request(f"wait {seconds}") == "Error: seconds must be from 0 to 3600"


@pytest.mark.parametrize("seconds", ["inf", "nan"])
def test_wait_takes_decimal_seconds_only(
    client: TesterConnection, seconds: str
) -> None:
    # Not numbers to commandproto's float parameters: a usage error.
    assert client.request(f"wait {seconds}") == "Error: usage: wait SECONDS"


def test_wait_times_out() -> None:
    server = CommandTester(make_commands(), command_timeout=5)
    client = server.connect()
    client.send("wait 10", "set k after")
    server.advance(4.9)
    assert client.replies() == []
    server.advance(0.1)
    assert client.replies() == ["Error: wait timed out", "OK"]
    server.advance(10)
    assert client.replies() == []


# select


def test_select_answers_ok(client: TesterConnection) -> None:
    assert client.request("select 15") == "OK"


def test_databases_are_separate(client: TesterConnection) -> None:
    client.request("set k zero")
    client.request("select 1")
    assert client.request("get k") == "Error: no such key"
    client.request("set k one")
    client.request("select 0")
    assert client.request("get k") == "zero"


def test_select_is_per_connection(server: CommandTester) -> None:
    first, second = server.connect(), server.connect()
    first.request("select 1")
    first.request("set k one")
    assert second.request("get k") == "Error: no such key"
    second.request("select 1")
    assert second.request("get k") == "one"


def test_del_and_incr_use_the_selected_database(client: TesterConnection) -> None:
    client.request("set k zero")
    client.request("select 2")
    assert client.request("del k") == "0"
    assert client.request("incr k") == "1"
    client.request("select 0")
    assert client.request("get k") == "zero"


@pytest.mark.parametrize("db", ["16", "-1"])
def test_select_refuses_out_of_range(client: TesterConnection, db: str) -> None:
    client.request("select 3")
    assert client.request(f"select {db}") == "Error: DB must be from 0 to 15"
    client.request("set k three")
    client.request("select 3")
    assert client.request("get k") == "three"


# whoami


def test_whoami_answers_the_peer(server: CommandTester) -> None:
    first, second = server.connect(), server.connect()
    assert first.request("whoami") == f"tcp:127.0.0.1:{first.peer.port}"
    assert second.request("whoami") == f"tcp:127.0.0.1:{second.peer.port}"
    assert first.peer.port != second.peer.port


def test_whoami_takes_no_arguments(client: TesterConnection) -> None:
    # commandproto answers arguments to a command that takes none as it
    # answers an unknown command (as for "Hello there").
    assert client.request("whoami now") == "Unknown command."


# usage errors


@pytest.mark.parametrize(
    ("line", "usage"),
    [
        ("set", "set KEY VALUE"),
        ("set k", "set KEY VALUE"),
        ("get", "get KEY"),
        ("get a b", "get KEY"),
        ("del", "del KEY [KEY...]"),
        ("incr", "incr KEY"),
        ("incr a b", "incr KEY"),
        ("wait", "wait SECONDS"),
        ("wait soon", "wait SECONDS"),
        ("wait 1 2", "wait SECONDS"),
        ("select", "select DB"),
        ("select one", "select DB"),
        ("select 1.5", "select DB"),
        ("select 1 2", "select DB"),
    ],
)
def test_usage_error(client: TesterConnection, line: str, usage: str) -> None:
    assert client.request(line) == f"Error: usage: {usage}"


# help and loading


def test_help_lists_the_commands(client: TesterConnection) -> None:
    names = parse_help(client.request("help"))
    assert names is not None
    assert names[-len(NAMES) :] == NAMES


@pytest.mark.parametrize(
    ("name", "described"),
    [
        ("set", "set KEY VALUE - Store VALUE (the rest of the line) under KEY."),
        ("get", "get KEY - Answer the value stored under KEY."),
        ("del", "del KEY [KEY...] - Delete each KEY; answer how many there were."),
        (
            "incr",
            "incr KEY - Add 1 to the integer under KEY (0 if unset); "
            "answer the result.",
        ),
        ("wait", "wait SECONDS - Answer after SECONDS, holding back later requests."),
        ("select", "select DB - Use database DB for the rest of this connection."),
        ("whoami", "whoami - Answer the client's address, as the server sees it."),
    ],
)
def test_help_describes_a_command(
    client: TesterConnection, name: str, described: str
) -> None:
    assert client.request(f"help {name}") == described


def test_module_table_has_the_commands() -> None:
    assert isinstance(kvstore.commands, CommandTable)
    assert kvstore.commands.names() == NAMES


def test_entry_point_names_the_module_table() -> None:
    (found,) = entry_points(group="commandproto.commands", name="kvstore")
    assert found.load() is kvstore.commands


def test_declares_its_state_per_process() -> None:
    # The store is in memory: twistd --workers 2 must refuse to split it.
    assert kvstore.commands.per_process_state
    assert make_commands().per_process_state
