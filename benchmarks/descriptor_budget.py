"""
The descriptor budget under a short open-file limit (issue 19, item 3).

Two measurements against a real ``twistd -n commandserver`` whose open-file
limit is set to ``--limit`` (1024) in ``preexec_fn``, every client on
loopback, every count bounded:

1. TLS: with an ``ssl:`` listener, ``--clients`` clients (950) connect one
   after another, finish their handshake, send ``Hello`` and stay
   connected: how many are served, refused with the error line, or reset.
2. PROXY headers: ``--proxy-flood`` connections (1,100) to a ``proxy:``
   listener each send ``PROXY TCP4 1.`` and stop; then 100 clients of the
   plain listener send ``Hello``: how many are served, refused or reset.

Run from a clone (``--tree`` points at another checkout to compare)::

    python benchmarks/descriptor_budget.py [--tree /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import trustme

TWISTD = (
    "import sys; from twisted.scripts.twistd import run; "
    "sys.argv[0] = 'twistd'; sys.exit(run())"
)
LISTENING = re.compile(r"listening on tcp:127\.0\.0\.1:(\d+)")
TIMEOUT = 5.0


def limited(files: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

    return apply


@contextlib.contextmanager
def server(tree: Path, files: int, *options: str) -> Iterator[tuple[list[int], str]]:
    """
    A server of ``tree``; yields its listening ports in order and its log.
    """
    process = subprocess.Popen(
        [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "commandserver", *options],
        cwd=tree,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tree)},
        preexec_fn=limited(files),
    )
    lines: list[str] = []
    wanted = sum(option == "--listen" for option in options)
    ports: list[int] = []
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while len(ports) < wanted and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = LISTENING.search(line)
        if found:
            ports.append(int(found.group(1)))
    stdout = process.stdout
    threading.Thread(target=lambda: lines.extend(stdout), daemon=True).start()
    try:
        yield ports, "".join(lines)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def first_line(sock: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def classify(counts: dict[str, int], ask: Callable[[], bytes]) -> None:
    try:
        line = ask()
    except (ConnectionError, ssl.SSLError, TimeoutError, OSError):
        counts["reset"] += 1
        return
    if line.startswith(b"Greetings!"):
        counts["served"] += 1
    elif line.startswith(b"Error: too many connections"):
        counts["refused"] += 1
    else:
        counts["silent"] += 1


def tls_run(tree: Path, files: int, clients: int, directory: Path) -> dict[str, int]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    keys = f"privateKey={directory}/key.pem:certKey={directory}/cert.pem"
    counts = dict.fromkeys(("served", "refused", "reset", "silent"), 0)
    held: list[socket.socket] = []
    with server(tree, files, "--listen", f"ssl:0:interface=127.0.0.1:{keys}") as (
        (port,),
        _,
    ):
        try:
            for _ in range(clients):

                def ask() -> bytes:
                    raw = socket.create_connection(("127.0.0.1", port), TIMEOUT)
                    tls = context.wrap_socket(raw, server_hostname="localhost")
                    held.append(tls)
                    tls.sendall(b"Hello\n")
                    return first_line(tls)

                classify(counts, ask)
        finally:
            for sock in held:
                sock.close()
    return counts


def proxy_run(tree: Path, files: int, flood: int) -> dict[str, int]:
    counts = dict.fromkeys(("served", "refused", "reset", "silent"), 0)
    held: list[socket.socket] = []
    with server(
        tree,
        files,
        "--listen",
        "proxy:tcp:0:interface=127.0.0.1",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ) as ((proxy_port, plain_port), _):
        try:
            for _ in range(flood):
                try:
                    sock = socket.create_connection(("127.0.0.1", proxy_port), TIMEOUT)
                    sock.sendall(b"PROXY TCP4 1.")
                    held.append(sock)
                except OSError:
                    pass
            time.sleep(1.0)  # let the server accept what it will
            for _ in range(100):

                def ask() -> bytes:
                    sock = socket.create_connection(("127.0.0.1", plain_port), TIMEOUT)
                    held.append(sock)
                    sock.settimeout(TIMEOUT)
                    sock.sendall(b"Hello\n")
                    return first_line(sock)

                classify(counts, ask)
        finally:
            for sock in held:
                sock.close()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=Path(__file__).parent.parent)
    parser.add_argument("--limit", type=int, default=1024)
    parser.add_argument("--clients", type=int, default=950)
    parser.add_argument("--proxy-flood", type=int, default=1100)
    arguments = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = arguments.clients + arguments.proxy_flood + 200
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    tree = arguments.tree.resolve()
    with tempfile.TemporaryDirectory() as directory:
        tls = tls_run(tree, arguments.limit, arguments.clients, Path(directory))
    print(f"TLS, limit {arguments.limit}, {arguments.clients} clients: {tls}")
    proxy = proxy_run(tree, arguments.limit, arguments.proxy_flood)
    print(
        f"PROXY flood of {arguments.proxy_flood}, limit {arguments.limit}, then "
        f"100 plain clients: {proxy}"
    )


if __name__ == "__main__":
    main()
