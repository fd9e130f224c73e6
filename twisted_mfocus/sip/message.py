"""SIP messages: framing, parsing and serializing (RFC 3261 §7, §18.3).

Rules of this module:

- Bytes in, ``Request``/``Response`` out, and back.  No I/O, no clock.
- Framing is eager (start line, header lines, Content-Length, body); header
  values are only split into name and text.  ``Message.validate()`` does the
  typed checks a transaction layer relies on (§8.2, §16.3), so a caller can
  still answer 400 for a message whose headers are wrong.
- Content-Length is framing, not content: it is taken out of the header
  list on parse and written from ``len(body)`` on serialize.
- Every error is a ``SIPError`` carrying its status and a reason; framing
  errors are ``FramingError`` (close the stream, drop the datagram).
  Errors raised after the header section was read carry ``.message``, so a
  400 can still be formed.
- Every size and count is bounded by ``Limits``.
"""

import re

from .errors import FramingError, ParseError, SIPError, TooLarge, VersionNotSupported
from .headers import (LIST_HEADERS, SINGLE_HEADERS, Headers, canonical_name, split_list,
                      split_section, unfold)
from .shapes import cseq_shape, name_addr_shape, sip_uri_shape, via_shape
from .values import CSeq, NameAddr, Via
from .uri import URI

#: Max-Forwards of a request we originate (RFC 3261 §8.1.1.6).
MAX_FORWARDS = "70"

__all__ = [
    "MAX_FORWARDS",
    "Limits", "Message", "Request", "Response", "SentResponse", "parse_datagram",
    "StreamParser", "PING", "make_response", "REASONS",
]

_ENC = "utf-8"
_ERR = "surrogateescape"     # any octet round-trips (RFC 4475 §3.1.1.2)
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
#: Methods of RFC 3261 and its extensions: a UAS answers a known but
#: unsupported one 405, an unknown one 501 (§8.2.1).
KNOWN_METHODS = frozenset(("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK",
                           "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE",
                           "UPDATE"))


class Limits:
    """Bounds on what one message may hold."""

    __slots__ = ("max_head", "max_body", "max_headers")

    def __init__(self, max_head=32 * 1024, max_body=1024 * 1024, max_headers=256):
        self.max_head = max_head
        self.max_body = max_body
        self.max_headers = max_headers


DEFAULT_LIMITS = Limits()

#: Headers every request and response carries (RFC 3261 §8.1.1).
_MANDATORY = (("via", "Via"), ("from", "From"), ("to", "To"), ("call-id", "Call-ID"),
              ("cseq", "CSeq"))
_MANDATORY_KEYS = frozenset(key for key, _ in _MANDATORY)

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded",
    182: "Queued", 183: "Session Progress", 200: "OK", 202: "Accepted",
    300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete",
    485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending",
    493: "Undecipherable", 500: "Server Internal Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}


class Message:
    """What requests and responses share: headers, body and typed views."""

    __slots__ = ("headers", "body")

    def __init__(self, headers=None, body=b""):
        self.headers = headers if headers is not None else Headers()
        self.body = body

    # -- typed views (parsed on first access, cached by Headers) ---------

    @property
    def vias(self):
        return self.headers.typed("via", _parse_via)

    @property
    def top_via(self):
        vias = self.vias
        return vias[0] if vias else None

    def _single(self, key, parse):
        values = self.headers.typed(key, parse)
        return values[0] if values else None

    @property
    def from_(self):
        return self._single("from", _parse_from)

    @property
    def to(self):
        return self._single("to", _parse_to)

    @property
    def cseq(self):
        return self._single("cseq", _parse_cseq)

    @property
    def call_id(self):
        return self.headers.get("call-id")

    @property
    def contacts(self):
        return self.headers.typed("contact", _parse_contact)

    @property
    def routes(self):
        return self.headers.typed("route", _parse_route)

    @property
    def record_routes(self):
        return self.headers.typed("record-route", _parse_rr)

    @property
    def max_forwards(self):
        return self._single("max-forwards", _parse_max_forwards)

    @property
    def content_type(self):
        """The media type, lower-case, without parameters (or None)."""
        v = self.headers.get("content-type")
        return v.split(";", 1)[0].strip().lower() if v else None

    # -- validation ------------------------------------------------------

    def validate(self):
        """Check what transactions and dialogs rely on; raise ParseError.

        RFC 3261 §8.1.1 (mandatory headers), RFC 4475 §3.3.8 (single-value
        headers appearing twice), §20 grammar of the parsed headers.  A
        value of the common shape is only matched here; its typed view is
        built when first asked for (``Headers.check``).
        """
        h = self.headers
        keys, values = h.fields()
        if h.malformed:
            raise ParseError(h.malformed, message=self)
        present = set(keys)
        if not _MANDATORY_KEYS <= present:
            for key, name in _MANDATORY:
                if key not in present:
                    raise ParseError(f"Missing {name} header", message=self)
        once = len(present) == len(keys)    # no name repeats: the common case
        if not once:
            for key in SINGLE_HEADERS:
                if keys.count(key) > 1:
                    raise ParseError(f"Multiple {canonical_name(key)[1]} headers",
                                     message=self)
        try:
            _check_values(h, present, once, _CHECKED_FIRST)
            shape = cseq_shape(values[keys.index("cseq")])
            method = shape.group(2) if shape else h.typed("cseq", _parse_cseq)[0].method
            if not values[keys.index("call-id")].strip():
                raise ParseError("Empty Call-ID")
            _check_values(h, present, once, _CHECKED_THEN)
            if "max-forwards" in present:
                _parse_max_forwards(values[keys.index("max-forwards")])
            self._validate_start(method)
        except SIPError as e:
            if e.message is None:
                e.message = self
            raise

    def _validate_start(self, cseq_method):
        pass

    # -- serializing -----------------------------------------------------

    def _start_line(self):
        raise NotImplementedError

    def to_bytes(self):
        body = self.body
        out = [self._start_line()]
        self.headers.serialize_into(out)
        out.append(f"Content-Length: {len(body)}\r\n\r\n")
        return "".join(out).encode(_ENC, _ERR) + body

    def __bytes__(self):
        return self.to_bytes()

    def _eq_key(self):
        return (self.headers, self.body)

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._eq_key() == other._eq_key()


class Request(Message):
    """A SIP request.  ``uri`` is parsed on first access."""

    __slots__ = ("method", "_uri", "_uri_text")

    def __init__(self, method, uri, headers=None, body=b""):
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self.method = method
        if isinstance(uri, URI):
            self._uri, self._uri_text = uri, None
        else:
            self._uri, self._uri_text = None, uri

    @property
    def uri(self):
        if self._uri is None:
            text = self._uri_text
            if text.startswith("<"):
                raise ParseError("Request-URI enclosed in <>", message=self)
            try:
                self._uri = URI.parse(text)
            except ParseError as e:
                raise ParseError(f"Bad Request-URI: {e.reason}", message=self)
        return self._uri

    @uri.setter
    def uri(self, value):
        self._uri, self._uri_text = value, None

    @property
    def uri_text(self):
        return self._uri_text if self._uri_text is not None else str(self._uri)

    def _validate_start(self, cseq_method):
        # A plain SIP URI (no headers) is only matched: parsed when asked for.
        if self._uri is not None or sip_uri_shape(self._uri_text) is None:
            uri = self.uri
            if uri.is_sip and uri.headers:
                # RFC 3261 §19.1.1 table: headers are not allowed in a
                # Request-URI (RFC 4475 §3.1.2.11).
                raise ParseError("Request-URI carries URI headers")
        if cseq_method != self.method:
            raise ParseError("CSeq method does not match the request method")

    def _start_line(self):
        return f"{self.method} {self.uri_text} SIP/2.0\r\n"

    def _eq_key(self):
        return (self.method, self.uri_text, self.headers, self.body)

    def __repr__(self):
        return f"<Request {self.method} {self.uri_text}>"


class Response(Message):
    """A SIP response."""

    __slots__ = ("status", "reason")

    def __init__(self, status, reason=None, headers=None, body=b""):
        super().__init__(headers, body)
        self.status = status
        self.reason = REASONS.get(status, "Unknown") if reason is None else reason

    def _start_line(self):
        return f"SIP/2.0 {self.status} {self.reason}\r\n"

    def _eq_key(self):
        return (self.status, self.reason, self.headers, self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.reason}>"


class SentResponse(Response):
    """A response as it went out, kept as its bytes: what a completed server
    transaction needs to answer retransmissions (§17.2.1, §17.2.2).  It reads
    like any response; its headers and body are parsed again from the bytes
    on each access.  The transport reads the top Via to route each send: it
    is read from the Via lines alone when the headers were written from
    their fields (every Via line then reads ``\r\nVia: value``)."""

    __slots__ = ("_data", "_via_at")

    def __init__(self, response):
        self.status, self.reason = response.status, response.reason
        data = self._data = response.to_bytes()
        #: Where the first Via line starts (its CRLF), -1 if none; None if
        #: the lines were written as they came (a parse must find them).
        self._via_at = data.find(b"\r\nVia: ", 0, data.find(b"\r\n\r\n") + 2) \
            if response.headers.written_from_fields() else None

    headers = property(lambda self: parse_datagram(self._data).headers)
    body = property(lambda self: parse_datagram(self._data).body)

    @property
    def top_via(self):
        at = self._via_at
        if at is None:
            return super().top_via
        data = self._data
        end = data.find(b"\r\n\r\n") + 2
        vias = []
        while at >= 0:                  # every value, as ``vias`` would: same errors
            eol = data.find(b"\r\n", at + 2)
            vias += [Via.parse(v) for v in split_list(data[at + 7:eol].decode(_ENC, _ERR))]
            at = data.find(b"\r\nVia: ", eol, end)
        return vias[0] if vias else None

    @property
    def cseq(self):
        """From the CSeq line alone, as ``top_via`` (metrics.py reads it on each send)."""
        data = self._data
        at = -1 if self._via_at is None else data.find(b"\r\nCSeq: ", 0, data.find(b"\r\n\r\n"))
        if at < 0:                      # lines as they came, or none: parse them all
            return super().cseq
        return CSeq.parse(data[at + 8:data.find(b"\r\n", at + 2)].decode(_ENC, _ERR))

    def to_bytes(self):
        return self._data

    def __eq__(self, other):
        if not isinstance(other, Response):
            return NotImplemented
        return self._eq_key() == other._eq_key()


# -- typed-header parsers (named so Headers can cache by parser) ----------------

_parse_via = Via.parse      # a classmethod gives a new bound method on each access
_parse_cseq = CSeq.parse


def _name_addr_parser(what):
    """NameAddr.parse naming ``what`` in its errors (a cache key of its own)."""
    return lambda v: NameAddr.parse(v, what)


_parse_from, _parse_to, _parse_contact, _parse_route, _parse_rr = map(
    _name_addr_parser, ("From", "To", "Contact", "Route", "Record-Route"))

#: What validate checks, in its order: (key, parser, shape of the common case).
_CHECKED_FIRST = (("via", _parse_via, via_shape), ("from", _parse_from, name_addr_shape),
                  ("to", _parse_to, name_addr_shape))
_CHECKED_THEN = (("contact", _parse_contact, name_addr_shape),
                 ("route", _parse_route, name_addr_shape),
                 ("record-route", _parse_rr, name_addr_shape))


def _check_values(headers, present, once, checks):
    """Check the values of each ``(key, parse, shape)`` of ``checks`` in
    turn (``Headers.check``); when no name repeats (``once``), one line of
    the common shape is done in short.  A Via without a value is an error."""
    keys, values = headers.fields()
    for key, parse, shape in checks:
        if key not in present:
            continue
        if once:
            value = values[keys.index(key)]
            if ("," not in value or key not in LIST_HEADERS) and shape(value) is not None:
                continue
        if not headers.check(key, parse, shape) and key == "via":
            raise ParseError("Empty Via header")


def _parse_max_forwards(v):
    v = v.strip()
    if not v.isdigit() or int(v) > 255:
        raise ParseError("Max-Forwards out of range")
    return int(v)


# -- framing --------------------------------------------------------------------

PING = object()
"""Marker yielded by ``StreamParser`` for a CRLFCRLF keep-alive (RFC 5626 §4.4.1)."""


def _parse_head(head, limits):
    """Split a header section into (start line, Headers, content-length).

    ``content_length`` is None when absent.  Raises FramingError for what
    makes the body boundary unknowable.  A header line that is not ``token:
    value`` is left out and noted (``Headers.malformed``): validate reports
    it, so a 400 can still be formed.
    """
    text = head.decode(_ENC, _ERR)
    eol = text.find("\r\n")
    if eol < 0:
        return text, Headers([]), None
    start, block = text[:eol], text[eol + 2:]
    if block[:1] in (" ", "\t"):
        raise ParseError("Continuation line before any header")
    # No line is empty (no CRLFCRLF in a head): a short block has few lines.
    if len(block) >= 2 * limits.max_headers and block.count("\r\n") >= limits.max_headers \
            and unfold(block).count("\r\n") >= limits.max_headers:
        raise TooLarge("Too many header fields")
    # Content-Length is framing: the split takes it out of the header list
    # (any case, compact form, blanks before the colon).
    headers, lengths = split_section(block)
    cl = None
    if lengths:
        v = lengths[0]
        if len(lengths) > 1 and len(set(lengths)) > 1:
            return start, headers, FramingError("Conflicting Content-Length values")
        if not v.isdigit():
            return start, headers, FramingError("Content-Length is not a non-negative number")
        cl = int(v)
        if cl > limits.max_body:
            return start, headers, TooLarge("Body larger than allowed")
    return start, headers, cl


def _build(start, headers, body):
    """Turn a start line into a Request or Response (§7.1, §7.2)."""
    if start.startswith("SIP/"):
        version, _, rest = start.partition(" ")
        code, _, reason = rest.partition(" ")
        msg = Response(0, reason, headers, body)
        if version.upper() != "SIP/2.0":
            raise VersionNotSupported(message=msg)
        if len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 699:
            raise ParseError("Bad status code", message=msg)
        msg.status = int(code)
        return msg
    parts = start.split(" ")
    method = parts[0]
    if len(parts) != 3:
        msg = Request(method, " ".join(parts[1:-1]), headers, body)
        raise ParseError("Malformed Request-Line (whitespace in Request-URI?)",
                         message=msg)
    msg = Request(method, parts[1], headers, body)
    if method not in KNOWN_METHODS and not _TOKEN_RE.match(method):
        raise ParseError("Malformed method", message=msg)
    version = parts[2]
    if version != "SIP/2.0" and version.upper() != "SIP/2.0":
        if version[:4].upper() == "SIP/":
            raise VersionNotSupported(message=msg)
        raise ParseError("Malformed SIP-Version", message=msg)
    return msg


def parse_datagram(data, limits=DEFAULT_LIMITS):
    """Parse one UDP datagram (§18.3): octets after Content-Length are
    ignored; a Content-Length beyond the datagram is an error; without
    Content-Length the body is the rest of the datagram (RFC 2543)."""
    if len(data) > limits.max_head + limits.max_body:
        raise TooLarge("Datagram larger than allowed")
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise FramingError("No end of header section")
    if end > limits.max_head:
        raise TooLarge("Header section larger than allowed")
    start, headers, cl = _parse_head(data[:end], limits)
    body_start = end + 4
    if isinstance(cl, SIPError):
        cl.message = _partial(start, headers)
        raise cl
    if cl is None:
        body = data[body_start:]
    else:
        if body_start + cl > len(data):
            raise FramingError("Content-Length larger than the datagram",
                               message=_partial(start, headers))
        body = data[body_start:body_start + cl]
    return _build(start, headers, body)


def _partial(start, headers):
    """A best-effort message for answering a framing error."""
    try:
        return _build(start, headers, b"")
    except SIPError as e:
        return e.message


class StreamParser:
    """Frames messages out of a TCP/TLS byte stream (§18.3).

    ``feed(data)`` returns the items completed by ``data``: messages,
    ``PING`` for a CRLFCRLF keep-alive, and ``SIPError`` instances for
    messages framed correctly but unparseable.  A ``FramingError`` item is
    always last: the stream is dead and must be closed.
    """

    def __init__(self, limits=DEFAULT_LIMITS):
        self.limits = limits
        self._buf = bytearray()
        self._dead = False

    @property
    def pending(self):
        """Bytes of a message not yet complete (a deadline runs on them)."""
        return len(self._buf)

    def feed(self, data):
        if self._dead:
            return []
        buf = self._buf
        buf += data
        out = []
        pos = 0
        limits = self.limits
        while True:
            # Keep-alives: CRLFCRLF is a ping, a lone CRLF a pong (RFC 5626).
            while buf.startswith(b"\r\n", pos):
                if buf.startswith(b"\r\n\r\n", pos):
                    out.append(PING)
                    pos += 4
                elif len(buf) - pos >= 4 or not buf.startswith(b"\r\n\r", pos):
                    pos += 2
                else:
                    break
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                if len(buf) - pos > limits.max_head:
                    return self._die(out, TooLarge("Header section larger than allowed"))
                break
            if end - pos > limits.max_head:
                return self._die(out, TooLarge("Header section larger than allowed"))
            try:
                start, headers, cl = _parse_head(bytes(buf[pos:end]), limits)
            except SIPError as e:
                return self._die(out, FramingError(e.reason, status=e.status))
            if isinstance(cl, SIPError):
                cl.message = _partial(start, headers)
                return self._die(out, cl)
            body_start = end + 4
            cl = cl or 0      # a stream message without Content-Length has no body
            if len(buf) < body_start + cl:
                break
            body = bytes(buf[body_start:body_start + cl])
            pos = body_start + cl
            try:
                out.append(_build(start, headers, body))
            except SIPError as e:
                out.append(e)
        del buf[:pos]
        return out

    def _die(self, out, error):
        self._dead = True
        self._buf = bytearray()
        out.append(error)
        return out

    @property
    def buffered(self):
        return len(self._buf)


# -- building responses ---------------------------------------------------------

def make_response(request, status, reason=None, to_tag=None, body=b"",
                  headers=()):
    """A response to ``request`` per RFC 3261 §8.2.6.

    Via, From, Call-ID and CSeq are copied as they came; To gets ``to_tag``
    unless it carries one or the response is 100.  Works on a partially
    parsed request too (only raw header text is copied), so a 400 can be
    sent for a request that failed ``validate()``.
    """
    rh = request.headers
    h = Headers()
    for key in ("via", "from", "to", "call-id", "cseq"):
        for value in rh.lines(key):
            h.add(key, value)
    if to_tag and status != 100:
        to = rh.get("to")
        if to is not None:
            try:                            # parsed once: validate() did it already
                has_tag = request.to.tag is not None
            except ParseError:
                has_tag = True
            if not has_tag:
                h.set("to", f"{to};tag={to_tag}")
    if status == 100 and "timestamp" in rh:
        h.add("Timestamp", rh.get("timestamp"))   # §8.2.6.1
    for name, value in headers:
        h.add(name, value)
    return Response(status, reason, h, body)
