"""
The client library, both adapters, against a real ``twistd -n
commandserver``: asyncio in this process (``asyncio.run``), Twisted in a
child process (``task.react``), so that no test touches the global reactor.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import trustme
from twisted.trial.unittest import SynchronousTestCase

import commandproto
from commandproto.asyncio import Pool, connect
from commandproto.client import errors

from ._processes import IO_TIMEOUT, ServerProcess, subprocess_environment

T = TypeVar("T")

COMMANDS = """
from twisted.internet.task import deferLater

from commandproto import CommandTable, Rest, Session

commands = CommandTable()


@commands.command("wait")
def wait(session: Session, seconds: float):
    return deferLater(session.clock, seconds, lambda: f"waited {seconds:g}")


@commands.command("echo")
def echo(text: Rest) -> str:
    return str(text)
"""


class LibraryProcessTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="commandproto-")
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)
        Path(self.directory, "libtest_commands.py").write_text(COMMANDS)

    def start_server(self, *options: str) -> ServerProcess:
        server = ServerProcess(
            self.directory,
            "--commands",
            "libtest_commands",
            "--command-timeout",
            "0",
            *options,
        )
        self.addCleanup(server.stop)
        return server

    def run_async(self, main: Callable[[], Awaitable[T]]) -> T:
        async def bounded() -> T:
            return await asyncio.wait_for(main(), IO_TIMEOUT)

        return asyncio.run(bounded())

    def run_twisted(self, body: str, **values: object) -> Any:
        """
        Run ``body``, the inside of ``async def main(reactor)``, in a child
        process with the real reactor; it returns something JSON can carry.
        """
        source = (
            "import json\n"
            "from twisted.internet.defer import ensureDeferred, gatherResults\n"
            "from twisted.internet.task import react\n"
            "import commandproto\n"
            "from commandproto.client import Pool, connect\n"
            f"values = {values!r}\n"
            "async def main(reactor):\n"
            + textwrap.indent(textwrap.dedent(body), "    ")
            + "\nasync def run(reactor):\n"
            "    print(json.dumps(await main(reactor)))\n"
            "react(lambda reactor: ensureDeferred(run(reactor)))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", source],
            capture_output=True,
            text=True,
            env=subprocess_environment(),
            timeout=IO_TIMEOUT * 2,
            cwd=self.directory,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads(result.stdout)


class AsyncioTests(LibraryProcessTestCase):
    def test_thousands_pipelined_in_order(self) -> None:
        server = self.start_server()

        async def main() -> list[str]:
            async with await connect("127.0.0.1", server.port) as client:
                return list(
                    await asyncio.gather(
                        *(client.request(f"echo {n}") for n in range(5000))
                    )
                )

        self.assertEqual(self.run_async(main), [str(n) for n in range(5000)])

    def test_error_replies_raise(self) -> None:
        server = self.start_server()

        async def main() -> tuple[object, object, str]:
            async with await connect("127.0.0.1", server.port) as client:
                unknown, error = await asyncio.gather(
                    client.request("hello"),
                    client.request("help nope"),
                    return_exceptions=True,
                )
                return unknown, error, await client.request("Hello")

        unknown, error, after = self.run_async(main)
        self.assertIsInstance(unknown, commandproto.UnknownCommand)
        self.assertIs(type(error), commandproto.ReplyError)
        self.assertEqual(
            (getattr(error, "reply", None), after),
            ("Error: no such command: nope", "Greetings!"),
        )

    def test_timeout_then_next_request_gets_its_own_reply(self) -> None:
        server = self.start_server()

        async def main() -> tuple[str, str]:
            async with await connect("127.0.0.1", server.port) as client:
                with self.assertRaises(TimeoutError):
                    await client.request("wait 0.5", timeout=0.1)
                return await client.request("echo mine"), await client.request("Hello")

        self.assertEqual(self.run_async(main), ("mine", "Greetings!"))

    def test_cancel_mid_flight_then_next_request_gets_its_own_reply(self) -> None:
        server = self.start_server()

        async def main() -> str:
            async with await connect("127.0.0.1", server.port) as client:
                task = asyncio.ensure_future(client.request("wait 0.3"))
                await asyncio.sleep(0.05)
                task.cancel()
                with self.assertRaises(asyncio.CancelledError):
                    await task
                return await client.request("echo mine")

        self.assertEqual(self.run_async(main), "mine")

    def test_mute_server_connect_times_out(self) -> None:
        # A listening socket that never reads: the connection is made, and
        # the client's "Are you there?" is never answered.
        import socket

        with socket.socket() as mute:
            mute.bind(("127.0.0.1", 0))
            mute.listen()

            async def main() -> None:
                await connect("127.0.0.1", mute.getsockname()[1], timeout=0.3)

            self.assertRaises(TimeoutError, self.run_async, main)

    def test_refusal_raises_server_refused(self) -> None:
        server = self.start_server("--max-connections", "1")

        async def main() -> BaseException | None:
            async with await connect("127.0.0.1", server.port):
                try:
                    await connect("127.0.0.1", server.port)
                except commandproto.ServerRefused as e:
                    return e
            return None

        refused = self.run_async(main)
        self.assertEqual(str(refused), "Error: too many connections (limit is 1)")

    def test_quit_then_requests_raise_connection_closed(self) -> None:
        server = self.start_server()

        async def main() -> tuple[str, str]:
            client = await connect("127.0.0.1", server.port)
            closing = await client.request("quit")
            await client.wait_closed()
            with self.assertRaises(commandproto.ConnectionClosed) as caught:
                await client.request("Hello")
            return closing, caught.exception.why

        self.assertEqual(self.run_async(main), ("Closing down", errors.QUIT))

    def test_close_waits_for_outstanding_replies(self) -> None:
        server = self.start_server()

        async def main() -> tuple[str, bool]:
            client = await connect("127.0.0.1", server.port)
            waiting = client.request("wait 0.2")
            await client.close()
            return await waiting, client.usable

        self.assertEqual(self.run_async(main), ("waited 0.2", False))

    def test_idle_close_says_idle(self) -> None:
        server = self.start_server("--idle-timeout", "0.3")

        async def main() -> commandproto.ConnectionClosed:
            client = await connect("127.0.0.1", server.port)
            await client.wait_closed()
            with self.assertRaises(commandproto.ConnectionClosed) as caught:
                await client.request("Hello")
            closed: commandproto.ConnectionClosed = caught.exception
            return closed

        closed = self.run_async(main)
        self.assertEqual(
            (closed.why, str(closed)),
            (errors.IDLE, "connection closed by the server: idle for 0.3 seconds"),
        )

    def test_server_shutdown_says_so(self) -> None:
        server = self.start_server()

        async def main() -> commandproto.ConnectionClosed:
            client = await connect("127.0.0.1", server.port)
            server.signal()
            await client.wait_closed()
            with self.assertRaises(commandproto.ConnectionClosed) as caught:
                await client.request("Hello")
            closed: commandproto.ConnectionClosed = caught.exception
            return closed

        closed = self.run_async(main)
        self.assertEqual(
            (closed.why, closed.line, str(closed)),
            (
                errors.SHUTDOWN,
                "Closing down",
                "connection closed: the server is shutting down",
            ),
        )

    def test_unix_socket(self) -> None:
        path = os.path.join(self.directory, "s.sock")
        self.start_server("--listen", f"unix:{path}")

        async def main() -> str:
            async with await connect(path=path) as client:
                return await client.request("Hello")

        self.assertEqual(self.run_async(main), "Greetings!")


class AsyncioPoolTests(LibraryProcessTestCase):
    def test_pool_is_bounded_and_requests_wait(self) -> None:
        server = self.start_server()

        async def main() -> tuple[list[str], int, int]:
            async with Pool("127.0.0.1", server.port, size=2) as pool:
                requests = [
                    asyncio.ensure_future(pool.request(f"echo {n}")) for n in range(6)
                ]
                await asyncio.sleep(0)
                waiting = pool.waiting
                replies = await asyncio.gather(*requests)
                return list(replies), pool.connections, waiting

        replies, connections, waiting = self.run_async(main)
        self.assertEqual(replies, [str(n) for n in range(6)])
        self.assertEqual((connections, waiting), (2, 4))

    def test_waiting_is_bounded_by_the_timeout(self) -> None:
        server = self.start_server()

        async def main() -> str:
            async with Pool("127.0.0.1", server.port, size=1) as pool:
                busy = asyncio.ensure_future(pool.request("wait 0.5"))
                await asyncio.sleep(0.05)
                with self.assertRaises(TimeoutError):
                    await pool.request("Hello", timeout=0.1)
                return await busy

        self.assertEqual(self.run_async(main), "waited 0.5")

    def test_pool_survives_server_restart(self) -> None:
        server = self.start_server()
        port = server.port

        async def main() -> tuple[str, str]:
            async with Pool("127.0.0.1", port, size=2) as pool:
                before = await pool.request("Hello")
                server.stop()
                restarted = self.start_server(
                    "--listen", f"tcp:{port}:interface=127.0.0.1"
                )
                self.assertEqual(restarted.port, port)
                await asyncio.sleep(0.1)
                return before, await pool.request("Hello")

        self.assertEqual(self.run_async(main), ("Greetings!", "Greetings!"))

    def test_timed_out_request_takes_its_connection_with_it(self) -> None:
        server = self.start_server()

        async def main() -> tuple[str, int]:
            async with Pool("127.0.0.1", server.port, size=1) as pool:
                with self.assertRaises(TimeoutError):
                    await pool.request("wait 5", timeout=0.1)
                # Not behind the 5 seconds: a new connection.
                reply = await pool.request("Hello", timeout=2)
                return reply, pool.connections

        self.assertEqual(self.run_async(main), ("Greetings!", 1))


class TLSTests(LibraryProcessTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.ca = trustme.CA()
        self.dir = Path(self.directory)
        self.ca.cert_pem.write_to_path(str(self.dir / "ca.pem"))
        (self.dir / "trust").mkdir()
        self.ca.cert_pem.write_to_path(str(self.dir / "trust" / "ca.pem"))
        server_cert = self.ca.issue_cert("localhost", "127.0.0.1")
        server_cert.private_key_pem.write_to_path(str(self.dir / "server.key"))
        server_cert.cert_chain_pems[0].write_to_path(str(self.dir / "server.pem"))
        self.client_cert = self.ca.issue_cert("client.example")
        self.client_cert.private_key_pem.write_to_path(str(self.dir / "client.key"))
        self.client_cert.cert_chain_pems[0].write_to_path(str(self.dir / "client.pem"))
        self.keys = f"privateKey={self.dir}/server.key:certKey={self.dir}/server.pem"

    def context(self, *, certificate: bool) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.dir / "ca.pem"))
        if certificate:
            self.client_cert.configure_cert(context)
        return context

    def test_asyncio_mutual_tls(self) -> None:
        server = self.start_server(
            "--listen",
            f"mtls:0:interface=127.0.0.1:{self.keys}:caCerts={self.dir}/ca.pem",
        )

        async def main() -> str:
            context = self.context(certificate=True)
            async with await connect(
                "127.0.0.1", server.port, ssl=context, server_hostname="localhost"
            ) as client:
                return await client.request("Hello")

        self.assertEqual(self.run_async(main), "Greetings!")

    def test_asyncio_mutual_tls_without_certificate_fails(self) -> None:
        server = self.start_server(
            "--listen",
            f"mtls:0:interface=127.0.0.1:{self.keys}:caCerts={self.dir}/ca.pem",
        )

        async def main() -> None:
            context = self.context(certificate=False)
            await connect(
                "127.0.0.1", server.port, ssl=context, server_hostname="localhost"
            )

        self.assertRaises(
            (commandproto.ConnectionClosed, ssl.SSLError, ConnectionError),
            self.run_async,
            main,
        )

    def test_twisted_tls(self) -> None:
        server = self.start_server("--listen", f"ssl:0:interface=127.0.0.1:{self.keys}")
        reply = self.run_twisted(
            """
            client = await connect(reactor, values["endpoint"])
            return await client.request("Hello")
            """,
            endpoint=f"tls:localhost:{server.port}:trustRoots={self.dir}/trust",
        )
        self.assertEqual(reply, "Greetings!")

    def test_twisted_mutual_tls(self) -> None:
        server = self.start_server(
            "--listen",
            f"mtls:0:interface=127.0.0.1:{self.keys}:caCerts={self.dir}/ca.pem",
        )
        reply = self.run_twisted(
            """
            client = await connect(reactor, values["endpoint"])
            return await client.request("Hello")
            """,
            endpoint=f"tls:localhost:{server.port}:trustRoots={self.dir}/trust"
            f":certificate={self.dir}/client.pem:privateKey={self.dir}/client.key",
        )
        self.assertEqual(reply, "Greetings!")


class TwistedTests(LibraryProcessTestCase):
    def test_pipelined_errors_timeout_and_quit(self) -> None:
        server = self.start_server()
        outcome = self.run_twisted(
            """
            client = await connect(reactor, f"tcp:127.0.0.1:{values['port']}")
            echoed = await gatherResults(
                [client.request(f"echo {n}") for n in range(5000)]
            )
            outcome = {"in_order": echoed == [str(n) for n in range(5000)]}
            try:
                await client.request("hello")
            except commandproto.UnknownCommand as e:
                outcome["unknown"] = e.reply
            try:
                await client.request("wait 0.5", timeout=0.1)
            except TimeoutError:
                outcome["timed_out"] = True
            outcome["after"] = await client.request("echo mine")
            outcome["quit"] = await client.request("quit")
            try:
                await client.request("Hello")
            except commandproto.ConnectionClosed as e:
                outcome["closed"] = e.why
            return outcome
            """,
            port=server.port,
        )
        self.assertEqual(
            outcome,
            {
                "in_order": True,
                "unknown": "Unknown command.",
                "timed_out": True,
                "after": "mine",
                "quit": "Closing down",
                "closed": "quit",
            },
        )

    def test_refusal_raises_server_refused(self) -> None:
        server = self.start_server("--max-connections", "1")
        refusal = self.run_twisted(
            """
            endpoint = f"tcp:127.0.0.1:{values['port']}"
            first = await connect(reactor, endpoint)
            try:
                await connect(reactor, endpoint)
            except commandproto.ServerRefused as e:
                return str(e)
            """,
            port=server.port,
        )
        self.assertEqual(refusal, "Error: too many connections (limit is 1)")

    def test_pool_bounded_waiting_and_restart(self) -> None:
        server = self.start_server()
        port = server.port
        flag = os.path.join(self.directory, "restarted")
        restarter = os.path.join(self.directory, "stopped")
        # The child stops after its first round and waits for the restart
        # that this process makes when the file "stopped" appears.
        code = """
            import os
            from twisted.internet.task import deferLater
            pool = Pool(reactor, f"tcp:127.0.0.1:{values['port']}", size=2)
            requests = [pool.request(f"echo {n}") for n in range(6)]
            waiting = pool.waiting
            replies = await gatherResults(requests)
            connections = pool.connections
            open(values["stopped"], "w").close()
            while not os.path.exists(values["restarted"]):
                await deferLater(reactor, 0.05, lambda: None)
            after = await pool.request("Hello")
            await pool.close()
            return [replies, connections, waiting, after]
            """
        import threading

        def restart() -> None:
            for _ in range(int(IO_TIMEOUT / 0.05)):
                if os.path.exists(restarter):
                    break
                threading.Event().wait(0.05)
            server.stop()
            self.start_server("--listen", f"tcp:{port}:interface=127.0.0.1")
            Path(flag).touch()

        thread = threading.Thread(target=restart)
        thread.start()
        try:
            outcome = self.run_twisted(
                code, port=port, stopped=restarter, restarted=flag
            )
        finally:
            thread.join()
        self.assertEqual(outcome, [[str(n) for n in range(6)], 2, 4, "Greetings!"])
