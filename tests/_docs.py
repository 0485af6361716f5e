"""
Reading README.rst and the manual's reST sources, for the tests that check
that what they show is what the code does.
"""

from __future__ import annotations

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.rst")
DOCS = os.path.join(ROOT, "docs")


def read(path: str) -> str:
    """
    The text of a file under the repository's top (``docs/howto/seed.rst``).
    """
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def literal_blocks(text: str) -> list[str]:
    """
    Every literal block of a reST text (the indented text after ``::``),
    dedented.
    """
    blocks = []
    for match in re.finditer(r"::\n\n((?:    .*\n|\n)+)", text):
        lines = match.group(1).splitlines()
        blocks.append("\n".join(line[4:] for line in lines).strip() + "\n")
    return blocks


def transcript(block: str) -> list[tuple[str, str]]:
    """
    The request and reply pairs of a ``->`` / ``<-`` transcript block.
    """
    pairs = []
    request: str | None = None
    for line in block.splitlines():
        if line.startswith("-> ") or line == "->":
            request = line[3:]
        elif line.startswith("<- ") and request is not None:
            pairs.append((request, line[3:]))
            request = None
    return pairs


def docs_extension_path() -> str:
    """
    The manual's Sphinx extensions' directory, put on ``sys.path`` once.
    """
    path = os.path.join(DOCS, "_ext")
    if path not in sys.path:
        sys.path.insert(0, path)
    return path
