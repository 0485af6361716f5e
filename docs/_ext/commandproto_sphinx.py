"""
Sphinx glue for the manual: ``.. commandproto-options:: DOTTED.Options``
lists every option of a :class:`twisted.python.usage.Options` class, with
the prose its body gives for each (see :mod:`optionsref`), and
``.. commandproto-log-events::`` every log line the package emits (see
:mod:`logevents`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

import logevents
import optionsref


class OptionsDirective(SphinxDirective):
    """
    Every option of an Options class, as Sphinx ``option`` entries.
    """

    required_arguments = 1
    has_content = True
    option_spec: ClassVar[dict[str, Any]] = {"program": directives.unchanged_required}

    def run(self) -> list[nodes.Node]:
        try:
            options = optionsref.gather(optionsref.load(self.arguments[0]))
            details = optionsref.parse_details(self.content)
            text = optionsref.render(self.options["program"], options, details)
        except (ImportError, AttributeError, optionsref.DetailsError) as e:
            raise self.error(f"commandproto-options {self.arguments[0]}: {e}") from e
        container = nodes.Element()
        container.document = self.state.document
        self.state.nested_parse(
            StringList(text, source=self.get_source_info()[0]),
            self.content_offset,
            container,
        )
        return list(container.children)


class LogEventsDirective(SphinxDirective):
    """
    Every log event of the commandproto package, as a table.
    """

    def run(self) -> list[nodes.Node]:
        import commandproto

        found = logevents.events(Path(commandproto.__file__).parent)
        container = nodes.Element()
        container.document = self.state.document
        self.state.nested_parse(
            StringList(logevents.render(found), source=self.get_source_info()[0]),
            self.content_offset,
            container,
        )
        return list(container.children)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("commandproto-options", OptionsDirective)
    app.add_directive("commandproto-log-events", LogEventsDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
