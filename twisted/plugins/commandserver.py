"""
The twistd plugin for commandproto: ``twistd -n commandserver``.

Kept to a single object that names :mod:`commandproto.tap` as a string, so that
twistd's plugin scan stays cheap and imports commandproto only when used.
"""

from twisted.application.service import ServiceMaker

commandserver = ServiceMaker(
    "commandproto command server",
    "commandproto.tap",
    "A line-based command server (Hello, Are you there?, quit).",
    "commandserver",
)
