"""
Finding the command tables that ``twistd commandserver --commands`` names:
installed command sets (Python entry points in the ``commandproto.commands``
group) by name, or any importable ``module:attribute``.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from ..commands.table import CommandTable

ENTRY_POINT_GROUP = "commandproto.commands"
DEFAULT_ATTRIBUTE = "commands"


class LoadError(Exception):
    """
    A command set could not be loaded; the message says why, in one line.
    """


@dataclass(frozen=True)
class InstalledSet:
    """
    A command set an installed package offers.

    :ivar name: what ``--commands`` calls it.
    :ivar target: where it lives, ``module:attribute``.
    :ivar distribution: the package that offers it.
    """

    name: str
    target: str
    distribution: str


def _installed() -> dict[str, EntryPoint]:
    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}


def installed_sets() -> list[InstalledSet]:
    """
    :returns: the command sets that installed packages offer, by name.
    """
    found = []
    for name, point in sorted(_installed().items()):
        distribution = point.dist.name if point.dist is not None else "?"
        found.append(InstalledSet(name, point.value, distribution))
    return found


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def load_table(spec: str) -> CommandTable:
    """
    Load the command table that ``spec`` names.

    :param spec: the name of an installed command set, or
        ``module:attribute`` (the attribute defaults to ``commands`` when only
        a module is given).  Modules are looked for in the current directory
        too, as gunicorn and celery do.
    :raises LoadError: if nothing can be imported by that name, or the
        attribute is missing or not a :class:`CommandTable`.
    """
    point = _installed().get(spec)
    if point is not None:
        where = f"command set {spec!r} ({point.value})"
        try:
            loaded = point.load()
        except Exception as e:
            raise LoadError(f"cannot load {where}: {_one_line(e)}") from None
        return _check(loaded, where)
    module_name, colon, attribute = spec.partition(":")
    attribute = attribute if colon else DEFAULT_ATTRIBUTE
    if not module_name or not attribute:
        raise LoadError(
            f"--commands {spec!r}: give an installed command set's name or "
            "MODULE[:ATTRIBUTE]"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (
            module_name == e.name or module_name.startswith(e.name + ".")
        ):
            raise LoadError(
                f"--commands {spec!r}: no installed command set and no module "
                f"named {module_name!r} (see --list-commands)"
            ) from None
        raise LoadError(f"cannot import {module_name!r}: {_one_line(e)}") from None
    except Exception as e:
        raise LoadError(f"cannot import {module_name!r}: {_one_line(e)}") from None
    try:
        loaded = getattr(module, attribute)
    except AttributeError:
        raise LoadError(
            f"--commands {spec!r}: module {module_name!r} has no {attribute!r}"
        ) from None
    return _check(loaded, f"{module_name}:{attribute}")


def _check(loaded: object, where: str) -> CommandTable:
    if not isinstance(loaded, CommandTable):
        raise LoadError(
            f"{where} is a {type(loaded).__name__}, not a commandproto CommandTable"
        )
    return loaded
