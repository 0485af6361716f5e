"""
Tests for the line codec: unit tests of ``LineFramer``, ``encode_line`` and
``decode_line``, and property tests of the framer and the server protocol
against simple models.
"""

from __future__ import annotations

import re
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from commandproto import __version__
from commandproto.commands.table import (
    CLOSING,
    GREETING,
    INVALID_UTF8,
    PRESENT,
    UNKNOWN_COMMAND,
    line_too_long,
)
from commandproto.wire.codec import (
    CRLF,
    DEFAULT_MAX_LINE_LENGTH,
    LF,
    OVERLONG,
    Frame,
    LineFramer,
    decode_line,
    encode_line,
    is_one_line,
)

from ._helpers import InMemoryServer

PROPERTY_SETTINGS = settings(deadline=None, max_examples=200)


def feed_all(framer: LineFramer, chunks: list[bytes]) -> list[Frame]:
    """
    Feed chunks to a framer one after another.

    :returns: every frame yielded, in order.
    """
    frames: list[Frame] = []
    for chunk in chunks:
        frames.extend(framer.feed(chunk))
    return frames


def one_at_a_time(data: bytes) -> list[bytes]:
    """
    :returns: ``data`` as a list of one-byte chunks.
    """
    return [data[i : i + 1] for i in range(len(data))]


class LineFramerTerminatorTests(SynchronousTestCase):
    """
    What ends a line and what is content.
    """

    def test_lf_ends_line(self) -> None:
        """
        LF alone ends a line, and is not part of it.
        """
        self.assertEqual(LineFramer().feed(b"abc\n"), [b"abc"])

    def test_crlf_ends_line(self) -> None:
        """
        CRLF ends a line, and neither byte is part of it.
        """
        self.assertEqual(LineFramer().feed(b"abc\r\n"), [b"abc"])

    def test_crlf_split_across_feeds_ends_line(self) -> None:
        """
        A CR at the end of one feed and an LF at the start of the next are
        one CRLF terminator.
        """
        framer = LineFramer()
        self.assertEqual(framer.feed(b"abc\r"), [])
        self.assertEqual(framer.feed(b"\n"), [b"abc"])

    def test_empty_lines(self) -> None:
        """
        A terminator right after another one ends an empty line.
        """
        self.assertEqual(LineFramer().feed(b"\n\r\n"), [b"", b""])

    def test_lone_cr_is_content(self) -> None:
        """
        A CR that is not followed by LF is part of the line.
        """
        self.assertEqual(LineFramer().feed(b"a\rb\r\rc\n"), [b"a\rb\r\rc"])

    def test_lone_cr_at_end_of_feed_is_content(self) -> None:
        """
        A CR at the end of a feed that turns out not to precede LF is part of
        the line.
        """
        framer = LineFramer()
        self.assertEqual(framer.feed(b"a\r"), [])
        self.assertEqual(framer.feed(b"b\n"), [b"a\rb"])

    def test_only_last_cr_before_lf_is_terminator(self) -> None:
        """
        Of several CRs before an LF, only the last belongs to the terminator.
        """
        self.assertEqual(LineFramer().feed(b"a\r\r\n"), [b"a\r"])


class LineFramerSplittingTests(SynchronousTestCase):
    """
    How the framer copes with a stream split anywhere.
    """

    stream = b"Hello\r\nAre you there?\n\na\rb\r\n\r\nquit\r\n"
    lines = [b"Hello", b"Are you there?", b"", b"a\rb", b"", b"quit"]

    def test_fed_at_once(self) -> None:
        """
        The whole stream in one feed gives every line.
        """
        self.assertEqual(LineFramer().feed(self.stream), self.lines)

    def test_fed_one_byte_at_a_time(self) -> None:
        """
        The stream fed one byte at a time gives the same lines as fed at once.
        """
        framer = LineFramer()
        frames = feed_all(framer, one_at_a_time(self.stream))
        self.assertEqual(frames, LineFramer().feed(self.stream))
        self.assertEqual(frames, self.lines)

    def test_partial_line_held(self) -> None:
        """
        The start of a line is held back, not yielded.
        """
        framer = LineFramer()
        self.assertEqual(framer.feed(b"hel"), [])
        self.assertEqual(framer.buffered, 3)

    def test_partial_line_completed_by_next_feed(self) -> None:
        """
        The next feed completes a held line, and its own unfinished tail is
        held in turn.
        """
        framer = LineFramer()
        framer.feed(b"hel")
        self.assertEqual(framer.feed(b"lo\nwor"), [b"hello"])
        self.assertEqual(framer.buffered, 3)
        self.assertEqual(framer.feed(b"ld\n"), [b"world"])
        self.assertEqual(framer.buffered, 0)

    def test_empty_feed(self) -> None:
        """
        Feeding no bytes yields nothing and keeps the held line.
        """
        framer = LineFramer()
        framer.feed(b"ab")
        self.assertEqual(framer.feed(b""), [])
        self.assertEqual(framer.feed(b"c\n"), [b"abc"])


class LineFramerFinishTests(SynchronousTestCase):
    """
    ``LineFramer.finish`` at the end of the stream.
    """

    def test_unterminated_line_returned(self) -> None:
        """
        A last line without a terminator is returned.
        """
        framer = LineFramer()
        self.assertEqual(framer.feed(b"a\nbc"), [b"a"])
        self.assertEqual(framer.finish(), b"bc")

    def test_trailing_cr_stripped(self) -> None:
        """
        A CR at the very end of the stream is taken as a cut-off terminator.
        """
        framer = LineFramer()
        framer.feed(b"bc\r")
        self.assertEqual(framer.finish(), b"bc")

    def test_none_after_terminated_line(self) -> None:
        """
        When the stream ends right after a terminator there is no last line.
        """
        framer = LineFramer()
        framer.feed(b"a\n")
        self.assertIsNone(framer.finish())

    def test_none_for_empty_stream(self) -> None:
        """
        An empty stream has no last line.
        """
        self.assertIsNone(LineFramer().finish())

    def test_none_after_unterminated_overlong_line(self) -> None:
        """
        The discarded rest of an over-long line is not returned as a last
        line.
        """
        framer = LineFramer(max_length=5)
        self.assertEqual(framer.feed(b"abcdefgh"), [OVERLONG])
        framer.feed(b"ijk\r")
        self.assertIsNone(framer.finish())

    def test_finish_empties_buffer(self) -> None:
        """
        After finish nothing is held.
        """
        framer = LineFramer()
        framer.feed(b"abc")
        framer.finish()
        self.assertEqual(framer.buffered, 0)


class LineFramerOverlongTests(SynchronousTestCase):
    """
    Lines longer than ``max_length``.
    """

    def test_complete_overlong_line(self) -> None:
        """
        A complete line longer than the limit yields exactly one OVERLONG,
        and the following lines come through.
        """
        framer = LineFramer(max_length=5)
        self.assertEqual(
            framer.feed(b"abcdef\nok\r\nfine\n"), [OVERLONG, b"ok", b"fine"]
        )

    def test_complete_overlong_line_with_crlf(self) -> None:
        """
        A CRLF-terminated line one byte over the limit is over-long.
        """
        framer = LineFramer(max_length=5)
        self.assertEqual(framer.feed(b"abcdef\r\nok\n"), [OVERLONG, b"ok"])

    def test_unterminated_overlong_reported_when_limit_passed(self) -> None:
        """
        An unterminated line yields OVERLONG as soon as it passes the limit,
        not when its terminator arrives.
        """
        framer = LineFramer(max_length=5)
        self.assertEqual(framer.feed(b"abcde"), [])
        self.assertEqual(framer.feed(b"f"), [OVERLONG])

    def test_unterminated_overlong_reported_once(self) -> None:
        """
        The rest of an over-long line yields nothing more, not even when its
        terminator arrives.
        """
        framer = LineFramer(max_length=5)
        framer.feed(b"abcdef")
        self.assertEqual(framer.feed(b"ghijklmnop"), [])
        self.assertEqual(framer.feed(b"q\n"), [])

    def test_overlong_discarded_until_lf_many_feeds_later(self) -> None:
        """
        After OVERLONG everything up to the next LF is discarded, however many
        feeds later it comes, and the lines after it are delivered.
        """
        framer = LineFramer(max_length=5)
        self.assertEqual(framer.feed(b"abcdefg"), [OVERLONG])
        for _ in range(200):
            self.assertEqual(framer.feed(b"x\rxxxxxxxxx"), [])
        self.assertEqual(framer.feed(b"yy\r\nnext\nha"), [b"next"])
        self.assertEqual(framer.feed(b"lf\r\n"), [b"half"])

    def test_overlong_discarded_until_lf_fed_one_at_a_time(self) -> None:
        """
        Bytes fed one at a time give one OVERLONG for an over-long line, and
        the lines around it.
        """
        framer = LineFramer(max_length=5)
        frames = feed_all(framer, one_at_a_time(b"ok\r\nabcdefghij\r\nfine\n"))
        self.assertEqual(frames, [b"ok", OVERLONG, b"fine"])

    def test_exactly_max_length_accepted(self) -> None:
        """
        A line of exactly ``max_length`` bytes is accepted.
        """
        framer = LineFramer(max_length=5)
        self.assertEqual(framer.feed(b"abcde\n"), [b"abcde"])

    def test_exactly_max_length_unterminated_held(self) -> None:
        """
        An unterminated line of exactly ``max_length`` bytes is held, and
        accepted when its terminator arrives.
        """
        framer = LineFramer(max_length=5)
        self.assertEqual(framer.feed(b"abcde"), [])
        self.assertEqual(framer.feed(b"\n"), [b"abcde"])

    def test_exactly_max_length_with_crlf_accepted(self) -> None:
        """
        A line of exactly ``max_length`` bytes ending in CRLF is accepted.
        """
        framer = LineFramer(max_length=5)
        self.assertEqual(framer.feed(b"abcde\r\n"), [b"abcde"])

    def test_exactly_max_length_with_cr_held_before_lf(self) -> None:
        """
        A line of exactly ``max_length`` bytes whose CR arrives before its LF
        is held (``max_length`` + 1 bytes), not reported, and accepted once
        the LF arrives.
        """
        framer = LineFramer(max_length=5)
        self.assertEqual(framer.feed(b"abcde\r"), [])
        self.assertEqual(framer.buffered, 6)
        self.assertEqual(framer.feed(b"\n"), [b"abcde"])

    def test_max_length_then_lone_cr_is_overlong(self) -> None:
        """
        When the CR held after ``max_length`` bytes turns out to be content,
        the line is over-long.
        """
        framer = LineFramer(max_length=5)
        self.assertEqual(framer.feed(b"abcde\r"), [])
        self.assertEqual(framer.feed(b"x"), [OVERLONG])
        self.assertEqual(framer.feed(b"\nok\n"), [b"ok"])

    def test_default_limit_is_16384(self) -> None:
        framer = LineFramer()
        self.assertEqual((framer.max_length, DEFAULT_MAX_LINE_LENGTH), (16384, 16384))
        self.assertEqual(framer.feed(b"x" * 16384 + LF), [b"x" * 16384])
        self.assertEqual(framer.feed(b"x" * 16385 + LF), [OVERLONG])

    def test_one_over_with_bare_lf_in_one_read_is_overlong(self) -> None:
        framer = LineFramer(max_length=10)
        self.assertEqual(framer.feed(b"x" * 11 + LF), [OVERLONG])
        self.assertEqual(framer.feed(b"x" * 10 + LF), [b"x" * 10])

    def test_overlong_spanning_reads_holds_nothing(self) -> None:
        framer = LineFramer(max_length=10)
        self.assertEqual(framer.feed(b"x" * 15), [OVERLONG])
        self.assertEqual(framer.buffered, 0)
        self.assertEqual(framer.feed(b"y" * 20), [])
        self.assertEqual(framer.buffered, 0)
        self.assertIsNone(framer.finish())
        # A finished framer starts afresh: the next line is not discarded.
        self.assertEqual(framer.feed(b"ok" + LF), [b"ok"])

    def test_endless_line_buffer_bounded(self) -> None:
        """
        An endless line fed in many chunks never makes the framer hold more
        than ``max_length`` + 1 bytes.
        """
        framer = LineFramer(max_length=10)
        chunks = [b"x", b"xxx", b"x\r", b"\r", b"xxxxxxx", b"x" * 25, b"\r\r\r"]
        for _ in range(100):
            for chunk in chunks:
                framer.feed(chunk)
                self.assertLessEqual(framer.buffered, 11)

    def test_endless_cr_line_buffer_bounded(self) -> None:
        """
        An endless line of CRs, fed one at a time, never makes the framer
        hold more than ``max_length`` + 1 bytes.
        """
        framer = LineFramer(max_length=3)
        for _ in range(100):
            framer.feed(b"\r")
            self.assertLessEqual(framer.buffered, 4)

    def test_max_length_zero_rejected(self) -> None:
        """
        A limit of zero is rejected.
        """
        self.assertRaises(ValueError, LineFramer, 0)

    def test_max_length_negative_rejected(self) -> None:
        """
        A negative limit is rejected.
        """
        self.assertRaises(ValueError, LineFramer, -1)

    def test_max_length_one_accepted(self) -> None:
        """
        A limit of one is the smallest allowed.
        """
        framer = LineFramer(max_length=1)
        self.assertEqual(framer.feed(b"a\nab\n\n"), [b"a", OVERLONG, b""])


class EncodeLineTests(SynchronousTestCase):
    """
    ``encode_line``.
    """

    def test_appends_crlf(self) -> None:
        """
        The encoded line ends with CRLF.
        """
        self.assertEqual(encode_line("Hello"), b"Hello\r\n")

    def test_empty_line(self) -> None:
        """
        An empty line is just CRLF.
        """
        self.assertEqual(encode_line(""), b"\r\n")

    def test_utf8(self) -> None:
        """
        Text is encoded as UTF-8.
        """
        self.assertEqual(encode_line("h\xe9 \u20ac"), b"h\xc3\xa9 \xe2\x82\xac\r\n")


class DecodeLineTests(SynchronousTestCase):
    """
    ``decode_line``.
    """

    def test_utf8(self) -> None:
        """
        Bytes are decoded as UTF-8.
        """
        self.assertEqual(decode_line(b"h\xc3\xa9 \xe2\x82\xac"), "h\xe9 \u20ac")

    def test_invalid_byte_raises(self) -> None:
        """
        A byte that never occurs in UTF-8 raises UnicodeDecodeError.
        """
        self.assertRaises(UnicodeDecodeError, decode_line, b"ab\xffcd")

    def test_truncated_sequence_raises(self) -> None:
        """
        A multi-byte sequence cut short raises UnicodeDecodeError.
        """
        self.assertRaises(UnicodeDecodeError, decode_line, b"ab\xe2\x82")


def as_content(line: bytes) -> bytes:
    """
    Make bytes usable as a line's content: no LF, and no CR at the end (a
    content CR before a CRLF terminator could not be told from it).
    """
    return line.replace(LF, b"").rstrip(b"\r")


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """
    Split bytes at the given offsets (in any order, repeats allowed, so some
    chunks may be empty).
    """
    bounds = [0, *sorted(cuts), len(data)]
    return [data[start:end] for start, end in pairwise(bounds)]


@st.composite
def chunked(draw: st.DrawFn, lines: list[bytes]) -> list[bytes]:
    """
    Terminate each line with LF or CRLF at random, concatenate and split the
    stream at random points.

    :returns: the chunks.
    """
    stream = b"".join(line + draw(st.sampled_from([LF, CRLF])) for line in lines)
    cuts = draw(st.lists(st.integers(0, len(stream)), max_size=len(stream) + 2))
    return split_at(stream, cuts)


# Content rich in CRs, so that CRs inside lines and next to terminators and
# chunk boundaries are common.
framer_lines = st.lists(
    st.lists(
        st.one_of(
            st.sampled_from([b"\r", b"\r\r", b"x", b"\xff"]), st.binary(max_size=8)
        ),
        max_size=12,
    ).map(lambda parts: as_content(b"".join(parts))),
    max_size=20,
)


def framer_model(lines: list[bytes], max_length: int) -> list[Frame]:
    """
    What the framer must yield for these lines, each terminated.
    """
    return [line if len(line) <= max_length else OVERLONG for line in lines]


class LineFramerPropertyTests(SynchronousTestCase):
    """
    The framer against its model, for any lines split anywhere.
    """

    @PROPERTY_SETTINGS
    @given(max_length=st.integers(1, 40), lines=framer_lines, data=st.data())
    def test_any_split_matches_model(
        self, max_length: int, lines: list[bytes], data: st.DataObject
    ) -> None:
        """
        Terminated lines, split anywhere, give each line (or OVERLONG for an
        over-long one) exactly once, leave nothing over, and never hold more
        than ``max_length`` + 1 bytes.
        """
        chunks = data.draw(chunked(lines))
        framer = LineFramer(max_length)
        frames: list[Frame] = []
        for chunk in chunks:
            frames.extend(framer.feed(chunk))
            self.assertLessEqual(framer.buffered, max_length + 1)
        self.assertEqual(frames, framer_model(lines, max_length))
        self.assertIsNone(framer.finish())


SEED_REPLIES = {"Hello": GREETING, "Are you there?": PRESENT, "quit": CLOSING}

# The built-ins beyond the seed, as a new user reads them in the README.
BUILTIN_NAMES = ["Hello", "Are you there?", "quit", "help", "stats"]
HELP_LIST = "Commands: Hello, Are you there?, quit, help, stats"
HELP_DESCRIPTIONS = {
    "Hello": "Hello - a greeting",
    "Are you there?": "Are you there? - a liveness check",
    "quit": "quit - end the session",
    "help": "help [NAME] - list the commands, or describe one",
    "stats": "stats - the server's numbers, as key=value pairs",
}


@st.composite
def request_line(draw: st.DrawFn, max_length: int) -> bytes:
    """
    One request line's content: a built-in command (with or without
    arguments), text, a blank line, invalid UTF-8 or an over-long line.
    """
    text = st.text(st.characters(codec="utf-8"), max_size=30)
    name = st.sampled_from(BUILTIN_NAMES)
    kinds = st.one_of(
        name.map(str.encode),
        name.map(lambda name: f"help {name}".encode()),
        st.tuples(name, st.sampled_from([" ", "  "]), st.one_of(name, text)).map(
            lambda parts: "".join(parts).encode()
        ),
        text.map(str.encode),
        st.just(b""),
        st.tuples(
            st.binary(max_size=10),
            st.sampled_from([b"\xff", b"\xfe", b"\xc0", b"\xc1", b"\xf5"]),
            st.binary(max_size=10),
        ).map(b"".join),
        st.integers(1, 20).map(lambda extra: b"y" * (max_length + extra)),
    )
    return as_content(draw(kinds))


def stats_pattern(commands: int, errors: int) -> re.Pattern[str]:
    """
    The ``stats`` reply on the only connection, after ``commands`` request
    lines dispatched before this one, of which ``errors`` were answered with
    an error.
    Byte counts and uptime are not modelled.
    """
    return re.compile(
        rf"uptime=\d+ connections=1 connections_total=1 commands={commands} "
        rf"errors={errors} refused=0 bytes_in=\d+ bytes_out=\d+ "
        rf"version={re.escape(__version__)}"
    )


def builtin_model(text: str) -> tuple[str, bool]:
    """
    The reply to one decoded request line other than ``stats``, and whether
    it is an error.
    """
    if text in SEED_REPLIES:
        return SEED_REPLIES[text], False
    head, space, arguments = text.partition(" ")
    if head == "help" and space:
        name = arguments.strip(" ")
        if not name:
            return HELP_LIST, False
        if name in HELP_DESCRIPTIONS:
            return HELP_DESCRIPTIONS[name], False
        return f"Error: no such command: {name}", True
    if text == "help":
        return HELP_LIST, False
    # Every other line names no command: the seed's commands and ``stats``
    # take no arguments, and "Are you there?" followed by text is no name.
    return UNKNOWN_COMMAND, True


def server_model(
    lines: list[bytes], max_line_length: int
) -> tuple[list[str | re.Pattern[str]], bool]:
    """
    What the server must send for these request lines, each terminated.

    :returns: the reply lines (texts, or a pattern for ``stats``) and whether
        the connection is closed.
    """
    replies: list[str | re.Pattern[str]] = []
    # What ``stats`` counts: the lines dispatched to a command table (not
    # the over-long or undecodable ones), and those answered with an error.
    commands = errors = 0
    for line in lines:
        if len(line) > max_line_length:
            replies.append(line_too_long(max_line_length))
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            replies.append(INVALID_UTF8)
            continue
        if text == "stats":
            replies.append(stats_pattern(commands, errors))
            commands += 1
            continue
        reply, error = builtin_model(text)
        replies.append(reply)
        commands += 1
        errors += error
        if text == "quit":
            return replies, True
    return replies, False


class ServerPropertyTests(SynchronousTestCase):
    """
    The server protocol end to end against its model.
    """

    @PROPERTY_SETTINGS
    @given(max_line_length=st.integers(1, 40), data=st.data())
    def test_any_split_matches_model(
        self, max_line_length: int, data: st.DataObject
    ) -> None:
        """
        Any mix of request lines (every built-in command among them), split
        anywhere, gets one reply per line in order, up to and including
        ``quit``, after which the connection is
        closed and nothing more is answered.
        """
        lines = data.draw(st.lists(request_line(max_line_length), max_size=15))
        chunks = data.draw(chunked(lines))
        protocol, transport = InMemoryServer(max_line_length=max_line_length).connect()
        for chunk in chunks:
            protocol.dataReceived(chunk)
        expected, closed = server_model(lines, max_line_length)
        written = transport.value()
        self.assertTrue(written == b"" or written.endswith(CRLF), written)
        replies = [decode_line(raw) for raw in written.split(CRLF)[:-1]]
        self.assertEqual(len(replies), len(expected), replies)
        for reply, want in zip(replies, expected, strict=True):
            if isinstance(want, re.Pattern):
                self.assertIsNotNone(want.fullmatch(reply), reply)
            else:
                self.assertEqual(reply, want)
        self.assertEqual(transport.disconnecting, closed)


class IsOneLineTests(SynchronousTestCase):
    """
    The one rule for what can be sent as a single line, shared by the
    command table, the client and the load tester.
    """

    def test_plain_text_is_one_line(self) -> None:
        self.assertTrue(is_one_line("Are you there?"))

    def test_lf_anywhere_is_not(self) -> None:
        self.assertFalse(is_one_line("a\nb"))

    def test_trailing_cr_is_not(self) -> None:
        self.assertFalse(is_one_line("quit\r"))

    def test_cr_inside_is_content(self) -> None:
        self.assertTrue(is_one_line("a\rb"))
        framer = LineFramer()
        self.assertEqual(framer.feed(encode_line("a\rb")), [b"a\rb"])
