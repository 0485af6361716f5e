"""
An asyncio server of the same protocol written as an ``asyncio.Protocol``:
each read's lines are answered with one write.  With ``--uvloop``, on uvloop.
"""

from __future__ import annotations

import argparse
import asyncio

from _common import announce, answer


class LineProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        replies = []
        for line in lines:
            reply, close = answer(line[:-1] if line.endswith(b"\r") else line)
            replies.append(reply)
            if close:
                self.transport.write(b"".join(replies))
                self.transport.close()
                return
        self.transport.write(b"".join(replies))


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(LineProtocol, "127.0.0.1", port)
    announce(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    arguments = parser.parse_args()
    if arguments.uvloop:
        import uvloop

        uvloop.run(main(arguments.port))
    else:
        asyncio.run(main(arguments.port))
