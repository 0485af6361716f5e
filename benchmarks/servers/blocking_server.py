"""
The seed's blocking server, as its blog post wrote it, changed only so that
a load generator can drive it:

  - requests are lines ended by LF or CRLF, and each reply is a line ended
    by CRLF (the seed took each ``recv`` as one command, and sent replies
    with no terminator);
  - after a client leaves it accepts the next one instead of exiting;
  - it listens on loopback with a backlog of 128 instead of 5, so that 50
    clients can wait in line.

It still serves one client at a time, and sends each reply with its own
``send`` as the seed does.
"""

from __future__ import annotations

import contextlib
import socket

from _common import announce, answer, parse_port


def serve_client(conn: socket.socket) -> None:
    buffer = b""
    while True:
        data = conn.recv(1024)
        if not data:
            return
        lines = (buffer + data).split(b"\n")
        buffer = lines.pop()
        for line in lines:
            reply, close = answer(line[:-1] if line.endswith(b"\r") else line)
            conn.sendall(reply)
            if close:
                return


def main(port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    announce(s.getsockname()[1])
    while True:
        conn, _ = s.accept()
        with conn, contextlib.suppress(ConnectionError):
            serve_client(conn)


if __name__ == "__main__":
    main(parse_port(__doc__ or ""))
