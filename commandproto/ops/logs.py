"""
``--log-format`` and ``--log-level``: how the server's log events are
written.

Text is twistd's own format.  JSON is one object per line: the time, the
level, the logger's namespace, the message as text would show it, and then
every field of the event as a key of its own (``peer``, ``conn``,
``command``, ``reason``...), so that a log pipeline can select on them.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import IO, Any, cast

from twisted.application.service import MultiService
from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    textFileLogObserver,
)
from twisted.python.logfile import LogFile

FORMATS = ("text", "json")
LEVELS = {level.name: level for level in LogLevel.iterconstants()}
"""``debug``, ``info``, ``warn``, ``error``, ``critical``."""

DEFAULT_FORMAT = "text"
DEFAULT_LEVEL = "info"

# Keys of the record itself; an event field of the same name is not copied.
_RECORD_KEYS = ("time", "level", "namespace", "message", "traceback")
# Fields of Twisted's legacy log bridge that repeat the record's own.
_LEGACY_KEYS = frozenset({"format", "isError", "message", "system", "time", "why"})
# Durations in milliseconds, kept to a tenth as the message shows them
# ("2001.6 ms"), not to the float's last digit.
_MILLISECOND_KEYS = frozenset({"ms"})


def _plain(value: object) -> object:
    """
    A value JSON can carry as it is, or its text.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def event_as_record(event: LogEvent) -> dict[str, Any]:
    """
    The JSON record of one log event.
    """
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(
            event.get("log_time", 0.0), timezone.utc
        ).isoformat(timespec="milliseconds"),
        "level": getattr(level, "name", "info"),
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if key.startswith("log_") or key in _LEGACY_KEYS or key in _RECORD_KEYS:
            continue
        if key in _MILLISECOND_KEYS and isinstance(value, float):
            value = round(value, 1)
        record[key] = _plain(value)
    return record


def format_json_line(event: LogEvent) -> str:
    """
    One log event as one line of JSON.
    """
    return json.dumps(event_as_record(event), ensure_ascii=False) + "\n"


def log_observer(
    out: IO[str], log_format: str = DEFAULT_FORMAT, level: str = DEFAULT_LEVEL
) -> ILogObserver:
    """
    An observer that writes events at ``level`` or above to ``out``.

    :param log_format: ``text`` or ``json``.
    :param level: a name in :data:`LEVELS`.
    """
    writer: ILogObserver
    if log_format == "json":
        writer = FileLogObserver(out, format_json_line)
    else:
        writer = textFileLogObserver(out)
    return cast(
        ILogObserver,
        FilteringLogObserver(
            writer, [LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])]
        ),
    )


def log_file(name: str) -> IO[str]:
    """
    Where twistd would log for ``--logfile NAME``: standard output for none
    or ``-``, else that file (reopened on SIGHUP, rotated on SIGUSR1).
    """
    if name in ("", "-"):
        return sys.stdout
    return cast(IO[str], LogFile.fromFullPath(name))


class LoggingService(MultiService):
    """
    The server's top service: it gives the application it joins a log
    observer, which twistd then logs to instead of its own.

    :param observer: the observer, or ``None`` to keep twistd's.
    """

    def __init__(self, observer: ILogObserver | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.observer = observer

    def setServiceParent(self, parent: Any) -> None:
        if self.observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.observer)
        super().setServiceParent(parent)  # type: ignore[no-untyped-call]
