"""Typed SIP errors.

Every failure of the sans-IO core is one of these.  Each carries the status
code a UAS answers with and a reason phrase that says what is wrong, so the
edge can answer without knowing why it failed.  Kinds are kept apart as
RFC 4475 asks: a *framing* error means the byte stream cannot be trusted any
more (close a stream, drop the rest of a datagram); a *parse* error is a bad
header value in an otherwise framed message (answer 400 if we can).
"""


class SIPError(Exception):
    """Base class: ``status`` and ``reason`` form the response to send."""

    status = 500
    default_reason = "Server Internal Error"

    def __init__(self, reason=None, status=None, message=None):
        self.reason = reason or self.default_reason
        if status is not None:
            self.status = status
        #: The partially parsed message, when the headers were framed before
        #: the error was found (lets a UAS copy Via/From/To/Call-ID/CSeq).
        self.message = message
        super().__init__(f"{self.status} {self.reason}")


class ParseError(SIPError):
    """A header or start line that does not follow the grammar (400)."""

    status = 400
    default_reason = "Bad Request"


class FramingError(ParseError):
    """The message boundary cannot be determined (RFC 3261 §18.3).

    Streams must be closed; the rest of a datagram is discarded.
    """


class VersionNotSupported(ParseError):
    """SIP-Version other than SIP/2.0 (RFC 3261 §8.2.2 → 505)."""

    status = 505
    default_reason = "Version Not Supported"


class TooLarge(FramingError):
    """A bound on size or count was exceeded (message, headers, body)."""

    status = 513
    default_reason = "Message Too Large"
