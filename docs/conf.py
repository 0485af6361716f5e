"""
Sphinx configuration of the commandproto manual.

Built in CI with ``sphinx-build -W --keep-going -n``: every warning and every
unresolved cross-reference fails the build.  Nothing is fetched from the
network (no intersphinx), so references to Twisted's, zope's and the standard
library's names are let through by :data:`nitpick_ignore_regex` below.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_ext"))

from commandproto import __version__

project = "commandproto"
author = "the commandproto authors"
copyright = "the commandproto authors"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "commandproto_sphinx",
]

exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"commandproto {__version__}"

# The API pages name what the docstrings name; the signatures' types are
# written into the descriptions so that a long signature stays readable.
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}

nitpicky = True
# Targets outside this manual that cannot resolve without intersphinx (which
# would fetch inventories over the network): Python's own names, Twisted,
# zope.interface and prometheus_client.
nitpick_ignore_regex = [
    (r"py:.*", r"(twisted|zope|prometheus_client|collections|typing|types)\..*"),
    (r"py:.*", r"(str|int|float|bool|bytes|object|None|dict|list|tuple|set)"),
    (r"py:.*", r"(Exception|ValueError|TypeError|KeyError|BaseException)"),
    (r"py:.*", r"(Callable|Awaitable|Iterable|Iterator|Mapping|Sequence|Any)"),
    # Twisted's names as our annotations spell them.
    (r"py:.*", r"(IAddress|IReactorTime|Clock|Deferred|Failure|ITransport)"),
    (r"py:class", r"<InterfaceClass (twisted|zope)\..*>"),
    # The type variable of CommandTable.command's decorator.
    (r"py:class", r"commandproto\.commands\.table\._H"),
    # What the client library's annotations name: its own protocol, and
    # the standard library's and Twisted's types.
    (r"py:class", r"(ClientProtocol|_Protocol|IStreamClientEndpoint|SSL)"),
    # The type variable of the Twisted adapter's waiters.
    (r"py:class", r"(commandproto\.client\.connection\.)?W"),
    (r"py:class", r"(ssl\.SSLContext|_asyncio\.Future|asyncio\..*)"),
    # The server's internal pieces, named in annotations of its public
    # classes (the explanation describes them; the API does not list them).
    (r"py:class", r"commandproto\.server\.(connection|phase|admission|dispatch)\..*"),
]

# linkcheck: only links inside the manual; the build has no network.
linkcheck_ignore = [r"https?://.*", r"mailto:.*"]
