"""
Microbenchmark of the server's per-read hot path, in process, no sockets:
``CommandServerProtocol.dataReceived`` on a transport that discards writes,
against Twisted's plain ``LineReceiver`` answering the same protocol.

Usage: python benchmarks/hot_path.py [--rounds N]

Prints the median nanoseconds per command for each scenario, and the ratio
to the plain LineReceiver, measured side by side in interleaved rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from twisted.internet.task import Clock
from twisted.protocols.basic import LineReceiver

from commandproto import CommandServerFactory

SCENARIOS = {
    "pipelined 64 x 'Hello\\r\\n'": b"Hello\r\n" * 64,
    "pipelined 64 x 'Hello\\n'": b"Hello\n" * 64,
    "pipelined 64 mixed": (b"Hello\r\nAre you there?\r\nnope\r\n" * 22)[: 64 * 12],
    "one 'Hello\\r\\n'": b"Hello\r\n",
}


class NullTransport:
    """
    Enough of a transport for the protocols, throwing writes away.
    """

    disconnecting = False

    def write(self, data: bytes) -> None:
        pass

    def writeSequence(self, data: list[bytes]) -> None:
        pass

    def getPeer(self) -> None:
        return None

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def loseConnection(self) -> None:
        pass


class PlainLineReceiver(LineReceiver):
    """
    The floor: Twisted's LineReceiver and a dict, nothing else.
    """

    delimiter = b"\n"
    replies = {
        b"Hello": b"Greetings!\r\n",
        b"Are you there?": b"Yes, I am here!\r\n",
    }

    def lineReceived(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        assert self.transport is not None
        self.transport.write(self.replies.get(line, b"Unknown command.\r\n"))


def make_commandproto() -> Callable[[bytes], None]:
    factory = CommandServerFactory(clock=Clock())
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(NullTransport())  # type: ignore[no-untyped-call]
    return protocol.dataReceived


def make_plain() -> Callable[[bytes], None]:
    protocol = PlainLineReceiver()
    protocol.makeConnection(NullTransport())  # type: ignore[no-untyped-call]
    return protocol.dataReceived


def time_per_command(receive: Callable[[bytes], None], data: bytes) -> float:
    commands = data.count(b"\n")
    repeats = max(20000 // commands, 200)
    start = time.perf_counter_ns()
    for _ in range(repeats):
        receive(data)
    return (time.perf_counter_ns() - start) / (repeats * commands)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    rounds = parser.parse_args().rounds
    servers = {"commandproto": make_commandproto, "plain LineReceiver": make_plain}
    print(f"{'scenario':34} {'server':20} {'ns/cmd':>8} {'ratio':>6}")
    for name, data in SCENARIOS.items():
        samples: dict[str, list[float]] = {server: [] for server in servers}
        for _ in range(rounds):
            for server, make in servers.items():
                samples[server].append(time_per_command(make(), data))
        floor = statistics.median(samples["plain LineReceiver"])
        for server, values in samples.items():
            median = statistics.median(values)
            print(f"{name:34} {server:20} {median:8.0f} {median / floor:6.2f}")


if __name__ == "__main__":
    main()
