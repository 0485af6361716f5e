"""
Every log call in the package takes a literal format string.

``twisted.logger`` expands its format (``{a.b[c]:>N}`` reaches attributes
and pads without limit), so text from the wire must only ever be a field.
A format built at run time (an f-string, a ``%`` or ``+`` expression, a
variable) is where client bytes could slip in: this test finds each one.
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import commandproto

LEVELS = {"debug", "info", "warn", "error", "critical", "failure", "emit"}
PACKAGE = Path(commandproto.__file__).parent


def _is_logger(node: ast.expr) -> bool:
    """
    ``log``, ``_log``, ``self.log``, ``self._log`` and the like.
    """
    if isinstance(node, ast.Name):
        return node.id.lstrip("_") in {"log", "logger"}
    if isinstance(node, ast.Attribute):
        return node.attr.lstrip("_") in {"log", "logger"}
    return False


def _format_argument(call: ast.Call, level: str) -> ast.expr | None:
    # Logger.emit(level, format, ...); the others take the format first.
    args = call.args[1:2] if level == "emit" else call.args[:1]
    for keyword in call.keywords:
        if keyword.arg == "format":
            return keyword.value
    return args[0] if args else None


def non_literal_formats(source: str, filename: str) -> list[str]:
    """
    The log calls in ``source`` whose format is not a string literal, as
    ``file:line``.
    """
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        level = node.func.attr
        if level not in LEVELS or not _is_logger(node.func.value):
            continue
        argument = _format_argument(node, level)
        if argument is None:
            continue
        if not (isinstance(argument, ast.Constant) and isinstance(argument.value, str)):
            found.append(f"{filename}:{node.lineno}")
    return found


class LogFormatTests(SynchronousTestCase):
    def test_every_format_in_the_package_is_a_literal(self) -> None:
        found = []
        for path in sorted(PACKAGE.rglob("*.py")):
            found += non_literal_formats(path.read_text(), str(path))
        self.assertEqual(found, [])

    def test_a_built_format_is_found(self) -> None:
        """
        The check finds the mistake it is for: today's PROXY bug, reduced.
        """
        source = (
            "def f(self, e):\n"
            "    log.info(f'invalid header: {e}', peer=1)\n"
            "    self._log.warn('bad ' + e)\n"
            "    log.failure(message)\n"
            "    log.info('fine {x}', x=e)\n"
        )
        self.assertEqual(
            non_literal_formats(source, "m.py"), ["m.py:2", "m.py:3", "m.py:4"]
        )
