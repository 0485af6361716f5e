"""
What the benchmark scripts share: the machine's description, pinning,
revisions extracted with ``git archive``, CPU time and memory read from
/proc, and one class that starts a server process (``twistd -n
commandserver`` or any other) and waits until it serves.

The scripts run as ``python benchmarks/NAME.py``, so this directory is on
their path and they ``import _harness``.  Linux only (/proc,
``sched_setaffinity``); every process started here is stopped by
:meth:`ServerProcess.stop`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import platform
import re
import resource
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""
The clone the scripts belong to.
"""

TWISTD = (
    "import sys; from twisted.scripts.twistd import run; "
    "sys.argv[0] = 'twistd'; sys.exit(run())"
)
"""
``python -c TWISTD`` is ``twistd``, run by this very interpreter.
"""

START_TIMEOUT = 30.0
"""
Seconds a server has to start listening, and again to answer.
"""

LISTENING = re.compile(r"listening on (?:tcp:127\.0\.0\.1:)?(\d+)")
"""
How a server says where it listens: commandproto's ``listening on
tcp:127.0.0.1:PORT``, or a reference server's ``listening on PORT``.
"""

TWISTD_LISTENING = re.compile(r"listening on tcp:127\.0\.0\.1:(\d+)")
"""
commandproto's line alone (its TLS listeners say ``tcp:`` too).
"""


# Processes, CPUs and /proc.


def pin(cpu: int | None, files: int | None = None) -> Callable[[], None] | None:
    """
    A ``preexec_fn`` that pins the child to a CPU and sets its open-file
    limit; ``None`` if there is nothing to do.
    """
    if cpu is None and files is None:
        return None

    def prepare() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        if files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

    return prepare


def choose_cpus(others: str, sharing: str) -> tuple[int | None, int | None, str]:
    """
    Which CPU the servers get and which everything else gets.

    :param others: what gets the second CPU, for the sentence
        (``"the generator (and this script)"``).
    :param sharing: what shares the only CPU with the server, if there is
        one (``"generator"``).
    :returns: the server's CPU, the others', and a sentence saying so.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None, None, "Processes were not pinned (no sched_setaffinity here)."
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return (
            cpus[0],
            cpus[0],
            f"Only CPU {cpus[0]} is available: server and {sharing} share it.",
        )
    return (
        cpus[0],
        cpus[1],
        f"Each server was pinned to CPU {cpus[0]} and {others} to CPU "
        f"{cpus[1]}, with os.sched_setaffinity.",
    )


def cpu_seconds(pid: int) -> float:
    """
    A process's user + system CPU time so far, from ``/proc/PID/stat``.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """
    A process's resident memory, from ``/proc/PID/status``.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def children(pid: int) -> list[int]:
    """
    A process's child processes, from ``/proc``.
    """
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def free_port() -> int:
    """
    A loopback TCP port that was free a moment ago, for servers that cannot
    pick their own and say which.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def read_exactly(sock: socket.socket, size: int) -> bytes:
    """
    Read ``size`` bytes, or fewer if the peer closes first.
    """
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def twistd_command(
    listeners: Sequence[str], options: Sequence[str], reactor: str | None = None
) -> list[str]:
    """
    ``twistd -n --pidfile= [-r REACTOR] commandserver --listen ... OPTIONS``,
    run by this interpreter.
    """
    chosen = ["-r", reactor] if reactor else []
    command = [
        sys.executable,
        "-c",
        TWISTD,
        "-n",
        "--pidfile=",
        *chosen,
        "commandserver",
    ]
    for listener in listeners:
        command += ["--listen", listener]
    return [*command, *options]


def redis_server_command(
    port: int, *options: str, program: str = "redis-server"
) -> list[str]:
    """
    ``redis-server`` on a loopback port with no persistence, the reference
    every benchmark compares with; ``options`` are added.
    """
    return [
        program,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        *options,
    ]


class ServerProcess:
    """
    A server process, pinned, its output going to a file (so that it never
    blocks on a full pipe), started and waited for: until it says where it
    listens, then until a probe says it serves.

    :ivar ports: the ports it listens on, in the order it said them (or the
        one it was given).
    """

    def __init__(
        self,
        command: Sequence[str],
        log: Path,
        *,
        environment: dict[str, str],
        cwd: Path,
        cpu: int | None = None,
        files: int | None = None,
        port: int | None = None,
        listeners: int = 1,
        pattern: re.Pattern[str] = LISTENING,
        serving: Callable[[int], bool] | None = None,
        name: str = "the server",
    ) -> None:
        """
        :param port: the port it was told to use; ``None`` if it picks its
            own and says so (``pattern``).
        :param listeners: how many ``pattern`` lines to wait for.
        :param serving: a probe of the last port, true once the server
            answers right.
        :raises RuntimeError: if it exits, or does not listen or answer
            within :data:`START_TIMEOUT`; it is stopped first.
        """
        self.name = name
        self.log = log
        self.command = list(command)
        with open(log, "wb") as output:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=environment,
                preexec_fn=pin(cpu, files),
            )
        self.pid = self.process.pid
        try:
            if port is None:
                self.ports = self._wait_for_ports(listeners, pattern)
            else:
                self.ports = [port]
            if serving is not None:
                self._wait_until_serving(serving)
        except BaseException:
            self.stop()
            raise

    @property
    def port(self) -> int:
        """
        The last port it listens on.
        """
        return self.ports[-1]

    def _wait_for_ports(self, count: int, pattern: re.Pattern[str]) -> list[int]:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            ports = [int(p) for p in pattern.findall(text)]
            if len(ports) >= count:
                return ports[:count]
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()}")

    def _wait_until_serving(self, serving: Callable[[int], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if serving(self.port):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} is not answering")

    def cpu_seconds(self) -> float:
        """
        CPU time the server has used, user and system.
        """
        return cpu_seconds(self.pid)

    def rss_kib(self) -> int:
        """
        The server's resident memory.
        """
        return rss_kib(self.pid)

    def stop(self, timeout: float = 15.0, also: Sequence[int] = ()) -> None:
        """
        SIGTERM, then SIGKILL (to it and to ``also``) after ``timeout``.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                for pid in also:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.process.kill()
                self.process.wait()


def probe(request: bytes, reply: bytes) -> Callable[[int], bool]:
    """
    A ``serving`` probe for :class:`ServerProcess`: one connection sends
    ``request`` and must get ``reply``.
    """

    def serving(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(request)
                return read_exactly(s, len(reply)) == reply
        except OSError:
            return False

    return serving


# Revisions.


def git(*arguments: str, tree: Path = ROOT) -> str:
    """
    Run git in ``tree``; its output, stripped.
    """
    return subprocess.run(
        ["git", "-C", str(tree), *arguments],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()


def git_commit(tree: Path) -> str:
    """
    A checkout's commit, and whether its code (not docs/, which the scripts
    write) has uncommitted changes.
    """
    try:
        head = git("rev-parse", "--short", "HEAD", tree=tree)
        dirty = git(
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            "commandproto",
            "benchmarks",
            "twisted",
            tree=tree,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + (" (with uncommitted changes)" if dirty else "")


def resolve_tree(where: str, archives: Path) -> tuple[Path, str]:
    """
    Find the commandproto checkout to measure.

    :param where: a checkout's path, or a git revision of this repository,
        which is then extracted with ``git archive``.
    :param archives: where to extract revisions.
    :returns: the checkout and a description of it.
    :raises ValueError: if ``where`` is neither.
    """
    if Path(where, "commandproto").is_dir():
        tree = Path(where).resolve()
        name = "this checkout" if tree == ROOT else f"``{tree}``"
        return tree, f"{name} ({git_commit(tree)})"
    try:
        commit = git("rev-parse", "--short", f"{where}^{{commit}}")
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", commit],
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise ValueError(f"{where!r} is neither a checkout nor a git revision") from e
    tree = archives / commit
    tree.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tree, filter="data")
        else:  # Python before 3.10.12: our own repository's files, trusted
            tar.extractall(tree)
    return tree, f"commit {commit} (``git archive``)"


def environment_for(tree: Path) -> dict[str, str]:
    """
    The environment that runs ``tree``'s commandproto.
    """
    return {**os.environ, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"}


# Reports.


def describe_machine(pinning: str) -> str:
    """
    The machine, as a reST list: CPU, memory, kernel, Python, Twisted, and
    the ``pinning`` sentence.
    """
    meminfo = (
        Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    )
    memory = re.search(r"MemTotal:\s+(\d+)", meminfo)
    cpuinfo = (
        Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    )
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    virtual = " (a virtual machine)" if re.search(r"\bhypervisor\b", cpuinfo) else ""
    twisted = importlib.metadata.version("twisted")
    lines = [
        f"- CPU: {os.cpu_count()} x {model.group(1) if model else platform.processor()}"
        f"{virtual}",
        f"- memory: {int(memory.group(1)) // 1024 // 1024 if memory else '?'} GiB",
        f"- kernel: {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, Twisted {twisted}",
        f"- {pinning}",
    ]
    return "\n".join(lines)


def simple_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """
    A reST simple table.
    """
    widths = [
        max(len(header[i]), *(len(row[i]) for row in rows)) if rows else len(header[i])
        for i in range(len(header))
    ]
    rule = "  ".join("=" * w for w in widths)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) for c, w in zip(cells, widths, strict=True)
        ).rstrip()

    return "\n".join([rule, line(header), rule, *(line(r) for r in rows), rule])


def number(value: object, digits: int = 0) -> str:
    """
    A number with thousands separators, or ``n/a`` for anything else.
    """
    if not isinstance(value, int | float):
        return "n/a"
    return f"{value:,.{digits}f}"


def write_docs(path: Path, block: str, begin: str, end: str) -> None:
    """
    Put ``block`` (which starts with ``begin`` and ends with ``end``) between
    those markers in ``path``, keeping the rest; or append it, markers and
    all.
    """
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        head = text[: text.index(begin)]
        tail = text[text.index(end) + len(end) :].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def log(message: str) -> None:
    """
    Progress, on standard error.
    """
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def stopping(server: ServerProcess) -> Iterator[ServerProcess]:
    """
    Stop ``server`` on the way out, whatever happens.
    """
    try:
        yield server
    finally:
        server.stop()
