"""Typed header values: Via, name-addr, CSeq and generic parameters
(RFC 3261 §20, §25.1; RFC 3581 rport).

Each ``parse`` checks the grammar and raises ``ParseError`` naming the
header and the part at fault; ``str()`` gives valid SIP back, so parse →
str → parse is an identity.  ``Headers.typed`` caches these per message.
"""

from .errors import ParseError
from .shapes import TOKEN_CHARS, cseq_shape, flat_params, name_addr_parts, via_parts
from .uri import URI, parse_hostport

__all__ = ["Via", "NameAddr", "CSeq", "parse_params", "format_params", "split_outside"]


# -- generic parameters (;name=value) ------------------------------------------

_BARE_VALUE = TOKEN_CHARS + ":[]"      # what format_params writes unquoted


def is_token(text):
    # strip() leaves nothing exactly when every character is a token char.
    return bool(text) and not text.strip(TOKEN_CHARS)


def _unquote(text, what):
    """Body of a quoted-string (the quotes included in ``text``)."""
    if len(text) < 2 or text[-1] != '"':
        raise ParseError(f"Unterminated quoted string in {what}")
    inner = text[1:-1]
    if "\\" not in inner:
        if '"' in inner:
            raise ParseError(f"Stray quote in {what}")
        return inner
    out = []
    i = 0
    while i < len(inner):
        c = inner[i]
        if c == "\\":
            i += 1
            if i == len(inner):
                raise ParseError(f"Dangling escape in {what}")
            out.append(inner[i])
        elif c == '"':
            raise ParseError(f"Stray quote in {what}")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_params(text, what):
    """Parse ``;name[=value]`` pairs into a dict with lower-case names.

    Quoted values are unquoted; a flag parameter maps to None.
    """
    params = {}
    if not text.strip():
        return params
    text = text.strip()
    if not text.startswith(";"):
        raise ParseError(f"Junk before parameters in {what}")
    for part in _split_semicolons(text[1:], what):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not is_token(name):
            raise ParseError(f"Bad parameter name in {what}")
        if eq:
            value = value.strip()
            if value.startswith('"'):
                value = _unquote(value, what)
            elif not value or any(c in " \t<>\"" for c in value):
                raise ParseError(f"Bad value of parameter {name!r} in {what}")
        else:
            value = None
        params[name.lower()] = value
    return params


def split_outside(text, sep, brackets=False):
    """Split ``text`` on ``sep`` outside quoted strings (§25.1 quoted-pair
    aware) and, with ``brackets``, outside ``<...>``.

    Returns (parts, unterminated): ``unterminated`` says a quote was left open.
    """
    parts, start, quoted, angle, i, n = [], 0, False, False, 0, len(text)
    while i < n:
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif brackets and c == "<":
            angle = True
        elif brackets and c == ">":
            angle = False
        elif c == sep and not angle:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts, quoted


def _split_semicolons(text, what):
    """Split on ``;`` outside quoted strings."""
    if '"' not in text:
        return text.split(";")
    parts, unterminated = split_outside(text, ";")
    if unterminated:
        raise ParseError(f"Unterminated quoted string in {what}")
    return parts


def format_params(params):
    out = []
    for name, value in params.items():
        if value is None:
            out.append(";" + name)
        elif value == "" or value.strip(_BARE_VALUE):
            out.append(";" + name + "=" + _quote(value))
        else:
            out.append(";" + name + "=" + value)
    return "".join(out)


# -- typed values --------------------------------------------------------------


class Via:
    """One Via value (RFC 3261 §20.42, RFC 3581 rport)."""

    __slots__ = ("transport", "host", "port", "params")

    def __init__(self, transport, host, port=None, params=None):
        self.transport = transport.upper()
        self.host = host
        self.port = port
        self.params = params if params is not None else {}

    @classmethod
    def parse(cls, text):
        m = via_parts(text)
        if m is not None:                   # the common shape: nothing to check
            transport, host, port, ptext = m.groups()
            return cls(transport, host.lower(), None if port is None else int(port),
                       flat_params(ptext))
        return cls._parse_any(text)

    @classmethod
    def _parse_any(cls, text):
        """Any Via the grammar allows (LWS, quoted values...), or the reason
        not: the common shape's matcher leaves these, and every error, here."""
        proto, sep, rest = text.partition("/")
        if not sep or proto.strip().upper() != "SIP":
            raise ParseError("Malformed Via: bad sent-protocol")
        version, sep, rest = rest.partition("/")
        if not sep or version.strip() != "2.0":
            raise ParseError("Malformed Via: bad protocol version")
        rest = rest.lstrip()
        i = 0
        while i < len(rest) and rest[i] not in " \t;":
            i += 1
        transport = rest[:i]
        if not is_token(transport):
            raise ParseError("Malformed Via: bad transport")
        rest = rest[i:].lstrip()
        semi = rest.find(";")
        sent_by, ptext = (rest, "") if semi < 0 else (rest[:semi], rest[semi:])
        sent_by = sent_by.strip()
        if not sent_by:
            raise ParseError("Malformed Via: no sent-by")
        # Whitespace may surround the ':' of sent-by (§25.1 HCOLON in sent-by
        # is allowed by LWS rules of some implementations).
        host, port = parse_hostport(sent_by.replace(" ", "").replace("\t", ""),
                                    "Via sent-by")
        params = parse_params(ptext, "Via")
        rport = params.get("rport")
        if rport is not None and not (rport.isdigit() and int(rport) <= 65535):
            raise ParseError("Malformed Via: bad rport")
        ttl = params.get("ttl")
        if ttl is not None and not (ttl.isdigit() and int(ttl) <= 255):
            raise ParseError("Malformed Via: bad ttl")
        return cls(transport, host, port, params)

    def __str__(self):
        hp = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"SIP/2.0/{self.transport} {hp}{format_params(self.params)}"

    def __repr__(self):
        return f"Via({str(self)!r})"

    def __eq__(self, other):
        if not isinstance(other, Via):
            return NotImplemented
        return (self.transport, self.host, self.port, self.params) == \
               (other.transport, other.host, other.port, other.params)

    @property
    def branch(self):
        return self.params.get("branch")

    @property
    def received(self):
        return self.params.get("received")

    @property
    def rport(self):
        """``True`` for a bare ``;rport`` flag, the port once filled, or None."""
        if "rport" not in self.params:
            return None
        v = self.params["rport"]
        return True if v is None else int(v)

    @property
    def maddr(self):
        return self.params.get("maddr")

    @property
    def ttl(self):
        v = self.params.get("ttl")
        return None if v is None else int(v)

    @property
    def sent_by(self):
        """(host, port) with the transport's default port filled in."""
        return self.host, self.port or (5061 if self.transport == "TLS" else 5060)


class NameAddr:
    """name-addr or addr-spec with header parameters (From, To, Contact,
    Route, Record-Route, Refer-To, Referred-By, Reply-To)."""

    __slots__ = ("display", "uri", "params", "wildcard")

    def __init__(self, uri, display=None, params=None):
        self.uri = uri
        self.display = display
        self.params = params if params is not None else {}
        self.wildcard = False

    @classmethod
    def parse(cls, text, what="header"):
        m = name_addr_parts(text)
        if m is not None:                   # the common shape: nothing to check
            return cls._plain(m, what)
        return cls._parse_any(text, what)

    @classmethod
    def _plain(cls, m, what):
        """The value of a ``name_addr_parts`` match."""
        quoted, words, inner, s, u, h, p, spec, s2, u2, h2, p2, ptext = m.groups()
        if inner is not None:
            # The <URI>'s parameters run from its host or port to the '>'.
            uri = URI.plain(s, u, h, p, m.string[m.end(6 if p is None else 7):m.end(3)], inner)
            display = words if quoted is None else quoted
        else:
            uri = URI.plain(s2, u2, h2, p2, "", spec)
            display = None
        return cls(uri, display, parse_params(ptext, what) if '"' in ptext else flat_params(ptext))

    @classmethod
    def _parse_any(cls, text, what):
        """Any name-addr or addr-spec the grammar allows (escapes, LWS,
        quoted-pairs, '*'), or the reason not: the common shape's matcher
        leaves these, and every error, here."""
        text = text.strip()
        if text == "*":
            na = cls(None)
            na.wildcard = True
            return na
        display = None
        if text.startswith('"'):
            i = 1
            while i < len(text):
                c = text[i]
                if c == "\\":
                    i += 2
                    continue
                if c == '"':
                    break
                i += 1
            else:
                raise ParseError(f"Unterminated quoted display name in {what}")
            display = _unquote(text[:i + 1], what)
            text = text[i + 1:].lstrip()
            if not text.startswith("<"):
                raise ParseError(f"Quoted display name without <URI> in {what}")
        lt = text.find("<")
        if lt >= 0:
            if display is None and lt:
                display = text[:lt].strip()
                for word in display.split():
                    if not is_token(word):
                        raise ParseError(f"Bad display name in {what}")
            gt = text.find(">", lt)
            if gt < 0:
                raise ParseError(f"Unterminated <URI> in {what}")
            raw = text[lt + 1:gt]
            if raw != raw.strip():
                # RFC 4475 §3.1.2.14: no LWS inside the angle brackets.
                raise ParseError(f"Whitespace inside <URI> in {what}")
            uri = URI.parse(raw)
            params = parse_params(text[gt + 1:], what)
        else:
            # addr-spec: parameters after the URI belong to the header (§20.10).
            semi = text.find(";")
            raw, ptext = (text, "") if semi < 0 else (text[:semi], text[semi:])
            raw = raw.strip()
            if not raw or any(c in raw for c in " \t,?"):
                raise ParseError(f"Malformed address in {what}")
            uri = URI.parse(raw)
            params = parse_params(ptext, what)
        return cls(uri, display, params)

    def __str__(self):
        if self.wildcard:
            return "*"
        out = []
        if self.display:
            d = self.display
            out.append((d if all(is_token(w) for w in d.split()) else _quote(d)) + " ")
        out += ["<", str(self.uri), ">", format_params(self.params)]
        return "".join(out)

    def __repr__(self):
        return f"NameAddr({str(self)!r})"

    def __eq__(self, other):
        if not isinstance(other, NameAddr):
            return NotImplemented
        return (self.uri, self.display, self.params, self.wildcard) == \
               (other.uri, other.display, other.params, other.wildcard)

    @property
    def tag(self):
        return self.params.get("tag")


class CSeq:
    """CSeq: sequence number 0..2**32-1 and method (§20.16, §8.1.1.5)."""

    __slots__ = ("seq", "method")

    def __init__(self, seq, method):
        self.seq = seq
        self.method = method

    @classmethod
    def parse(cls, text):
        m = cseq_shape(text)
        if m is not None:                   # the common shape: nothing to check
            return cls(int(m.group(1)), m.group(2))
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ParseError("Malformed CSeq")
        seq = int(parts[0])
        if seq > 0xFFFFFFFF:
            raise ParseError("CSeq number out of range")
        if not is_token(parts[1]):
            raise ParseError("Malformed CSeq method")
        return cls(seq, parts[1])

    def __str__(self):
        return f"{self.seq} {self.method}"

    def __repr__(self):
        return f"CSeq({self.seq}, {self.method!r})"

    def __eq__(self, other):
        if not isinstance(other, CSeq):
            return NotImplemented
        return (self.seq, self.method) == (other.seq, other.method)
