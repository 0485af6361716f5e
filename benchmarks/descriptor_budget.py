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
3. A burst: ``--burst`` clients (1,200) connect at once, each sends
   ``Hello`` and stays connected.
4. Closes that linger: at a limit of ``--quit-limit`` (256), ``--quitters``
   clients (150) send ``quit`` and never close; then ``--newcomers`` (200)
   connect at once, each sending ``Hello``.

In 3 and 4 each client waits at most ``--wait`` seconds (15) from its
connect for its first line, and is counted as served (``Greetings!``), told
why (``Error: too many connections ...``), reset (refused or reset, with no
line) or silent (closed with nothing, or nothing in time).

Run from a clone (``--tree`` points at another checkout to compare;
``--only`` picks some of ``tls,proxy,burst,quit``)::

    python benchmarks/descriptor_budget.py [--tree /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import resource
import selectors
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import trustme
from _harness import pin, twistd_command

LISTENING = re.compile(r"listening on tcp:127\.0\.0\.1:(\d+)")
TIMEOUT = 5.0


@contextlib.contextmanager
def server(tree: Path, files: int, *options: str) -> Iterator[tuple[list[int], str]]:
    """
    A server of ``tree``; yields its listening ports in order and its log.
    """
    process = subprocess.Popen(
        twistd_command((), options),
        cwd=tree,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tree)},
        preexec_fn=pin(None, files),
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


def open_at_once(
    port: int, clients: int, sources: int = 10
) -> tuple[list[socket.socket], int]:
    """
    Start ``clients`` connections at once (non-blocking), from ``sources``
    loopback addresses (127.0.5.1, ...) in turn.

    :returns: the sockets whose connect is under way, and how many were
        refused at once.
    """
    started = []
    refused = 0
    for n in range(clients):
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind((f"127.0.5.{n % sources + 1}", 0))
        if sock.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS):
            started.append(sock)
        else:
            refused += 1
            sock.close()
    return started, refused


def first_lines(socks: list[socket.socket], send: bytes, wait: float) -> dict[str, int]:
    """
    Send ``send`` on each socket once it is connected, and classify what
    each gets within ``wait`` seconds.
    """
    counts = dict.fromkeys(("served", "refused", "reset", "silent"), 0)
    data = {sock: b"" for sock in socks}
    by_object: dict[object, socket.socket] = {sock: sock for sock in socks}
    connected: set[socket.socket] = set()
    deadline = time.monotonic() + wait

    def done(sock: socket.socket, kind: str) -> None:
        counts[kind] += 1
        selector.unregister(sock)

    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_WRITE)
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.1):
                sock = by_object[key.fileobj]
                if sock not in connected:
                    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if error:
                        done(sock, "reset")
                        continue
                    connected.add(sock)
                    try:
                        sock.send(send)
                    except OSError:
                        done(sock, "reset")
                        continue
                    selector.modify(sock, selectors.EVENT_READ)
                    continue
                try:
                    chunk = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    done(sock, "reset" if not data[sock] else "silent")
                    continue
                data[sock] += chunk
                if chunk and b"\n" not in data[sock]:
                    continue
                line = data[sock]
                if line.startswith(b"Greetings!"):
                    done(sock, "served")
                elif line.startswith(b"Error: too many connections"):
                    done(sock, "refused")
                else:
                    done(sock, "silent")
        counts["silent"] += len(selector.get_map())
    return counts


def burst_run(tree: Path, files: int, clients: int, wait: float) -> dict[str, int]:
    """
    ``clients`` connect at once, send ``Hello`` and stay connected.
    """
    with server(tree, files, "--listen", "tcp:0:interface=127.0.0.1") as ((port,), _):
        socks, refused = open_at_once(port, clients)
        try:
            counts = first_lines(socks, b"Hello\n", wait)
            counts["reset"] += refused
            return counts
        finally:
            for sock in socks:
                sock.close()


def quit_run(
    tree: Path, files: int, quitters: int, newcomers: int, wait: float
) -> tuple[dict[str, int], dict[str, int]]:
    """
    ``quitters`` send ``quit`` and never close; then ``newcomers`` connect at
    once and send ``Hello``.

    :returns: what the quitters got, and what the newcomers got.
    """
    with server(tree, files, "--listen", "tcp:0:interface=127.0.0.1") as ((port,), _):
        held: list[socket.socket] = []
        try:
            for _ in range(quitters):
                sock = socket.create_connection(("127.0.0.1", port), TIMEOUT)
                held.append(sock)
                sock.sendall(b"quit\n")
                first_line(sock)
            quit_counts = {"quitters": len(held)}
            socks, refused = open_at_once(port, newcomers)
            held += socks
            counts = first_lines(socks, b"Hello\n", wait)
            counts["reset"] += refused
            return quit_counts, counts
        finally:
            for sock in held:
                sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=Path(__file__).parent.parent)
    parser.add_argument("--limit", type=int, default=1024)
    parser.add_argument("--clients", type=int, default=950)
    parser.add_argument("--proxy-flood", type=int, default=1100)
    parser.add_argument("--burst", type=int, default=1200)
    parser.add_argument("--quit-limit", type=int, default=256)
    parser.add_argument("--quitters", type=int, default=150)
    parser.add_argument("--newcomers", type=int, default=200)
    parser.add_argument("--wait", type=float, default=15.0)
    parser.add_argument("--only", default="tls,proxy,burst,quit")
    arguments = parser.parse_args()
    only = set(arguments.only.split(","))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max(arguments.clients + arguments.proxy_flood, arguments.burst) + 200
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    tree = arguments.tree.resolve()
    limit = arguments.limit
    if "tls" in only:
        with tempfile.TemporaryDirectory() as directory:
            tls = tls_run(tree, limit, arguments.clients, Path(directory))
        print(f"TLS, limit {limit}, {arguments.clients} clients: {tls}")
    if "proxy" in only:
        proxy = proxy_run(tree, limit, arguments.proxy_flood)
        print(
            f"PROXY flood of {arguments.proxy_flood}, limit {limit}, then "
            f"100 plain clients: {proxy}"
        )
    if "burst" in only:
        burst = burst_run(tree, limit, arguments.burst, arguments.wait)
        print(f"burst of {arguments.burst}, limit {limit}: {burst}", flush=True)
    if "quit" in only:
        quitters, newcomers = quit_run(
            tree,
            arguments.quit_limit,
            arguments.quitters,
            arguments.newcomers,
            arguments.wait,
        )
        print(
            f"limit {arguments.quit_limit}, {quitters['quitters']} sent quit and "
            f"stay, then {arguments.newcomers} newcomers: {newcomers}"
        )


if __name__ == "__main__":
    main()
