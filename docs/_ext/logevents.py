"""
The log events of the package, read from its source: every call on a
``twisted.logger`` logger whose format is a string literal (every call, as
``tests/test_log_formats.py`` checks), with its level and module.

Plain Python, no Sphinx: the directive in :mod:`commandproto_sphinx` renders
these, so the manual's list cannot miss a log line that the code emits.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

LEVELS = ("debug", "info", "warn", "error", "critical", "failure")


@dataclass(frozen=True)
class Event:
    """
    One log call.

    :ivar level: ``debug`` to ``critical``.
    :ivar traceback: whether a traceback comes with it (``log.failure``).
    :ivar format: its format string; ``{name}`` is a field of the event (a
        key of its own in ``--log-format json``).
    :ivar module: the dotted name of the module that logs it.
    """

    level: str
    format: str
    module: str
    traceback: bool = False


def _is_logger(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id.lstrip("_") in {"log", "logger"}
    if isinstance(node, ast.Attribute):
        return node.attr.lstrip("_") in {"log", "logger"}
    return False


def _level(call: ast.Call, method: str) -> str:
    """
    The level a call logs at: its method's, or for ``failure`` its ``level``
    argument (third, or by keyword), ``critical`` without one.
    """
    if method != "failure":
        return method
    given = call.args[2] if len(call.args) > 2 else None
    for keyword in call.keywords:
        if keyword.arg == "level":
            given = keyword.value
    if isinstance(given, ast.Attribute):
        return given.attr
    return "critical"


def events(package: Path) -> list[Event]:
    """
    Every log event of the package in the directory ``package``, module by
    module, in source order.
    """
    found = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        calls = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and _is_logger(node.func.value)
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                method = node.func.attr
                calls.append(
                    (
                        node.lineno,
                        Event(
                            _level(node, method),
                            node.args[0].value,
                            module,
                            traceback=method == "failure",
                        ),
                    )
                )
        found += [event for _, event in sorted(calls, key=lambda call: call[0])]
    return found


def _literal(text: str) -> str:
    # ``...`` cannot hold a backquote; none of our formats has one.
    return f"``{text}``" if text.strip() else "(empty)"


def render(found: list[Event]) -> list[str]:
    """
    reST: a table of the events, by module.
    """
    out = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 10 60 30",
        "",
        "   * - Level",
        "     - Message (``{field}``: a field of the event)",
        "     - Logged by",
    ]
    for event in found:
        out += [
            f"   * - {event.level}",
            f"     - {_literal(event.format)}"
            + (", then the traceback" if event.traceback else ""),
            f"     - ``{event.module}``",
        ]
    return [*out, ""]
