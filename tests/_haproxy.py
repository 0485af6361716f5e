"""
Run a real HAProxy in front of real servers for integration tests: in the
foreground (``-db``), its frontend a loopback socket the OS picked and that
it inherits (``bind fd@N``), stopped in the test's cleanup.
"""

from __future__ import annotations

import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Sequence

from twisted.trial.unittest import SkipTest

TEST_CHECKS = "inter 200ms fall 1 rise 1"
"""Health checks for tests: quick to notice a backend going down."""
DOCUMENTED_CHECKS = "inter 2s fall 2 rise 2"

# The configuration docs/howto/scaling.rst shows, with the frontend
# on an inherited socket and quicker health checks.
CONFIG = """\
global
    maxconn 1000

defaults
    mode tcp
    timeout connect 2s
    timeout client 310s
    timeout server 310s
    retries 3
    option redispatch

frontend commands
    bind {bind}
    default_backend commandservers

backend commandservers
    balance roundrobin
    option tcp-check
    tcp-check send "Are you there?\\r\\n"
    tcp-check expect string "Yes, I am here!"
{servers}
"""
SERVER = "    server {name} 127.0.0.1:{port} {proxy} check {checks}"


def haproxy_binary() -> str:
    """
    The ``haproxy`` executable, or skip the test saying why.
    """
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if found is None:
        raise SkipTest(
            "haproxy is not installed (.ci/run installs it: apt-get install haproxy)"
        )
    return found


def haproxy_config(
    bind: str, servers: Sequence[tuple[str, int, str]], checks: str = TEST_CHECKS
) -> str:
    """
    The configuration for a frontend on ``bind`` and these servers, each
    ``(name, port, "send-proxy" or "send-proxy-v2")``.
    """
    return CONFIG.format(
        bind=bind,
        servers="\n".join(
            SERVER.format(name=name, port=port, proxy=proxy, checks=checks)
            for name, port, proxy in servers
        ),
    )


class HAProxyProcess:
    """
    A running ``haproxy -db``, its frontend on a loopback port the OS chose.

    :ivar address: the frontend's address.
    """

    def __init__(self, directory: str, servers: Sequence[tuple[str, int, str]]) -> None:
        binary = haproxy_binary()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.set_inheritable(True)
        self.address: tuple[str, int] = self._listener.getsockname()
        path = f"{directory}/haproxy.cfg"
        with open(path, "w") as config:
            config.write(haproxy_config(f"fd@{self._listener.fileno()}", servers))
        self.process = subprocess.Popen(
            [binary, "-db", "-f", path],
            pass_fds=(self._listener.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for_output(self, text: str, timeout: float = 15.0) -> str:
        """
        Wait for a line of HAProxy's output that contains ``text``, or fail.
        """
        deadline = time.monotonic() + timeout
        for seen in self.output:
            if text in seen:
                return seen
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(
                    f"HAProxy did not say {text!r} (exit status "
                    f"{self.process.poll()}):\n" + "".join(self.output)
                )
            self.output.append(line)
            if text in line:
                return line

    def connect(self, source: str = "127.0.0.2") -> socket.socket:
        """
        A client connection through HAProxy, from ``source``.
        """
        return socket.create_connection(
            self.address, timeout=15.0, source_address=(source, 0)
        )

    def stop(self) -> None:
        self._listener.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
