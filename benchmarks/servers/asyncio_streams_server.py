"""
An asyncio server of the same protocol written with streams
(``asyncio.start_server``, ``readline``, ``write`` and ``drain``), as most
asyncio code is.
"""

from __future__ import annotations

import asyncio

from _common import announce, answer, parse_port, strip_terminator


async def serve_client(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while line := await reader.readline():
            reply, close = answer(strip_terminator(line))
            writer.write(reply)
            await writer.drain()
            if close:
                break
    except (ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(serve_client, "127.0.0.1", port)
    announce(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(parse_port(__doc__ or "")))
