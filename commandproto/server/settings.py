"""
The limits every connection of a server keeps.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """
    The limits every connection of a server keeps, in one object they share.

    :ivar idle_timeout: seconds without a whole line before a client is
        told so and disconnected, or ``None``.
    :ivar line_timeout: seconds a line may take to arrive from its first
        byte, or ``None``.
    :ivar handshake_timeout: seconds a TLS handshake may take, or ``None``.
    :ivar max_unanswered: lines of one connection that may await their
        replies before reading stops.
    """

    idle_timeout: float | None
    line_timeout: float | None
    handshake_timeout: float | None
    max_unanswered: int
