"""
twistd's pid file, checked before twistd does: its own check ends in a
paragraph on standard error where we promise one line.
"""

from __future__ import annotations

import errno
import os


def pid_file_problem(path: str) -> str | None:
    """
    What stops the server using this pid file, in one line, or ``None``.

    A pid file naming a process that no longer runs is no problem: twistd
    removes it and starts. Only a file that names a running process (ours
    from an earlier start, or another program that took the number after a
    reboot) or that holds no process id stops the start.

    :param path: twistd's ``--pidfile`` (empty: none is written).
    """
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            text = f.read(64)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot read the pid file {path}: {e.strerror or e}"
    try:
        pid = int(text.strip())
    except ValueError:
        return (
            f"the pid file {path} holds no process id: remove it, or "
            "choose another with twistd --pidfile"
        )
    if pid <= 0:
        return (
            f"the pid file {path} holds no process id: remove it, or "
            "choose another with twistd --pidfile"
        )
    try:
        os.kill(pid, 0)
    except OSError as e:
        if e.errno == errno.ESRCH:
            return None
        if e.errno != errno.EPERM:
            return f"cannot check process {pid} from the pid file {path}: {e.strerror}"
    return (
        f"the pid file {path} names process {pid}, which is running (another "
        "server started here? stop it; if not, remove the file, or choose "
        "another with twistd --pidfile)"
    )
