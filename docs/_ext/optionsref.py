"""
The reference entries of a command's options, read from its
:class:`twisted.python.usage.Options` class, so that the manual lists exactly
the options that ``--help`` prints.

Plain Python, no Sphinx: the directive in :mod:`commandproto_sphinx` renders
these entries, and the test suite checks them against ``--help``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any


class DetailsError(ValueError):
    """
    The prose written for the options names one the class does not have, or
    gives a value name to a flag.
    """


@dataclass(frozen=True)
class Option:
    """
    One option as ``--help`` prints it.

    :ivar name: the long name, without its dashes.
    :ivar short: the one-letter name, or ``None``.
    :ivar takes_value: whether it is a parameter rather than a flag.
    :ivar help: the help text, on one line.
    :ivar default: its default value, or ``None`` for none.
    """

    name: str
    short: str | None
    takes_value: bool
    help: str
    default: Any = None


@dataclass
class Details:
    """
    What the manual adds to one option.

    :ivar metavar: the name of its value (``ENDPOINT``), for a parameter.
    :ivar lines: reST lines of prose, dedented.
    """

    metavar: str | None = None
    lines: list[str] = field(default_factory=list)


def load(dotted: str) -> type[Any]:
    """
    The class that a dotted name such as ``commandproto.tap.Options`` names.
    """
    module, _, name = dotted.rpartition(".")
    found: type[Any] = getattr(import_module(module), name)
    return found


def gather(options_class: type[Any]) -> list[Option]:
    """
    Every option of ``options_class``, in the order ``--help`` prints them
    (by long name).
    """
    parsed = options_class()
    shorts = {
        long: alias
        for alias, long in parsed.synonyms.items()
        if len(alias) == 1 and alias != long
    }
    found = []
    for spelled in parsed.longOpt:
        name = spelled.rstrip("=")
        found.append(
            Option(
                name=name,
                short=shorts.get(name),
                takes_value=spelled.endswith("="),
                help=" ".join(parsed.docs.get(name, "").split()),
                default=parsed.defaults.get(name) if spelled.endswith("=") else None,
            )
        )
    return sorted(found, key=lambda option: option.name)


def parse_details(lines: Iterable[str]) -> dict[str, Details]:
    """
    The prose given for each option: a line ``--name METAVAR`` (the metavar
    for a parameter only) at the margin, then its indented paragraphs.
    """
    details: dict[str, Details] = {}
    current: Details | None = None
    indent: int | None = None
    for line in lines:
        if line.startswith("--"):
            name, _, metavar = line[2:].strip().partition(" ")
            if name in details:
                raise DetailsError(f"--{name} is described twice")
            current = details[name] = Details(metavar.strip() or None)
            indent = None
        elif not line.strip():
            if current is not None:
                current.lines.append("")
        elif current is None or not line[:1].isspace():
            raise DetailsError(f"expected --OPTION at the margin, not {line!r}")
        else:
            if indent is None:
                indent = len(line) - len(line.lstrip())
            current.lines.append(line[indent:])
    return details


def _escape(text: str) -> str:
    """
    Plain text as reST: no markup, and no ``tcp:...`` taken for a link.
    """
    return re.sub(r"([\\`*_|:<>\[\]])", r"\\\1", text)


def _default_text(option: Option) -> str | None:
    if not option.takes_value or option.default is None:
        return None
    value = option.default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"``{value}``"


def render(
    program: str, options: Sequence[Option], details: dict[str, Details]
) -> list[str]:
    """
    reST for every option: Sphinx ``option`` entries of ``program``, each
    with the manual's prose for it (or, without any, its ``--help`` text)
    and its default.

    :raises DetailsError: if the prose names an option ``program`` does not
        have, or gives a flag a value.
    """
    known = {option.name: option for option in options}
    for name, detail in details.items():
        if name not in known:
            raise DetailsError(f"{program} has no option --{name}")
        if detail.metavar and not known[name].takes_value:
            raise DetailsError(f"--{name} is a flag: it takes no {detail.metavar}")
    out = [f".. program:: {program}", ""]
    for option in options:
        detail = details.get(option.name, Details())
        metavar = f" {detail.metavar or 'VALUE'}" if option.takes_value else ""
        names = [f"--{option.name}{metavar}"]
        if option.short:
            names.append(f"-{option.short}{metavar}")
        out += [f".. option:: {', '.join(names)}", ""]
        if option.help and not detail.lines:
            out += ["   " + _escape(option.help), ""]
        out += [f"   {line}" if line else "" for line in detail.lines]
        default = _default_text(option)
        if default:
            out += ["", f"   Default: {default}."]
        out.append("")
    return out
