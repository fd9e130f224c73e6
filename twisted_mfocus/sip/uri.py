"""SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966; RFC 5118).

Rules of this module:

- ``URI.parse`` checks the grammar and raises ``ParseError`` with a reason
  that names the offending part.  It never guesses.
- Components are stored *decoded*: %HH escapes are undone exactly once
  (RFC 3261 §19.1.2, RFC 4475 §3.1.1.3: ``v%61lue%25%34%31`` is ``value%41``,
  never ``valueA``).  ``str(uri)`` escapes again whatever the grammar does
  not allow raw, so parse → str → parse is an identity.
- Parameter names are case-insensitive (§19.1.4) and stored lower-case.
- A URI of any other scheme is kept opaque (``URI.opaque``): the element
  decides what to do with it (a UAS answers 416, RFC 3261 §8.2.2.1).
"""

import re

from twisted.logger import Logger

from .errors import ParseError
from .shapes import sip_uri_parts

__all__ = ["URI", "parse_hostport", "escape", "unescape"]

_HEX = "0123456789abcdefABCDEF"

# Character classes of RFC 3261 §25.1 (``escaped`` handled separately).
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_MARK = "-_.!~*'()"
_UNRESERVED = _ALNUM + _MARK
# As strings: ``text.strip(chars)`` is empty exactly when every character
# of ``text`` is one of ``chars`` (one C loop instead of one Python step
# per character).
_USER_OK = _UNRESERVED + "&=+$,;?/"
_PASSWORD_OK = _UNRESERVED + "&=+$,"
_PARAM_OK = _UNRESERVED + "[]/:&+$"
_HEADER_OK = _UNRESERVED + "[]/?:+$"
_TEL_OK = _UNRESERVED + "+#;=:%&$,/?@[]"  # RFC 3966, loosely
_OPAQUE_OK = _UNRESERVED + ";/?:@&=+$,%[]#"

_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
                          r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.?\Z")
_IPV4_RE = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\Z")
# RFC 5118 §4.10: tolerate the RFC 3261 ABNF bug (``:::``), so the check is
# deliberately loose: hex groups, colons and an optional dotted IPv4 tail.
_IPV6_RE = re.compile(r"\[[0-9A-Fa-f:]+(?:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})?\]\Z")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")


def unescape(text, what="URI"):
    """Undo %HH escapes once (RFC 3261 §19.1.2); reject a broken escape."""
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "%":
            h = text[i + 1:i + 3]
            if len(h) != 2 or h[0] not in _HEX or h[1] not in _HEX:
                raise ParseError(f"Bad %-escape in {what}")
            out.append(int(h, 16))
            i += 3
        else:
            out += c.encode("utf-8", "surrogateescape")
            i += 1
    return out.decode("utf-8", "surrogateescape")


def escape(text, allowed):
    """Escape every octet of ``text`` that ``allowed`` does not admit raw."""
    if not text.strip(allowed):
        return text
    out = []
    for c in text:
        if c in allowed:
            out.append(c)
        else:
            out.extend("%%%02X" % b for b in c.encode("utf-8", "surrogateescape"))
    return "".join(out)


def _check(text, allowed, what):
    """``text`` of characters in ``allowed`` or %HH escapes, unescaped."""
    _illegal(text, allowed + "%", what)
    return unescape(text, what)


def _illegal(text, allowed, what):
    """Raise naming the first character of ``text`` not in ``allowed``."""
    if text.strip(allowed):
        for c in text:
            if c not in allowed:
                raise ParseError(f"Illegal character {c!r} in {what}")


def parse_hostport(text, what="host"):
    """Split ``host[:port]`` into (host, port or None); hosts are lower-cased.

    IPv6 references keep their brackets (RFC 5118 §4.3: a port is only
    ever outside the ``]``).
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError(f"Unterminated IPv6 reference in {what}")
        host, rest = text[:end + 1], text[end + 1:]
        if not _IPV6_RE.match(host):
            raise ParseError(f"Bad IPv6 reference in {what}")
        if rest and not rest.startswith(":"):
            raise ParseError(f"Junk after IPv6 reference in {what}")
        port = rest[1:] if rest else None
    else:
        host, sep, port = text.partition(":")
        if not sep:
            port = None
        if not (_HOSTNAME_RE.match(host) or _IPV4_RE.match(host)):
            raise ParseError(f"Bad host in {what}")
    if port is not None:
        if not port.isdigit() or len(port) > 5 or int(port) > 65535:
            raise ParseError(f"Bad port in {what}")
        port = int(port)
    return host.lower(), port


_log = Logger()
_DUPLICATES = set()     # parameters seen repeated: each is logged once


def _duplicate_seen(name):
    if name not in _DUPLICATES and len(_DUPLICATES) < 64:
        _DUPLICATES.add(name)
        _log.info("a SIP URI repeats its {param!r} parameter: the first value is used "
                  "(logged once per parameter)", param=name)


def _checked_params(plist):
    """(name, value) of each ``name[=value]`` of a SIP URI, checked and
    unescaped (§19.1.2); names lower-cased (§19.1.4), a flag's value None."""
    for p in plist:
        name, eq, value = p.partition("=")
        if not name:
            raise ParseError("Empty parameter in SIP URI")
        yield (_check(name, _PARAM_OK, "URI parameter").lower(),
               _check(value, _PARAM_OK, "URI parameter") if eq else None)


def _first_wins(pairs):
    """URI parameters as a dict.  baresip 1.0 repeats ;transport and ;lr:
    the first value wins (RFC 3261 §19.1.1 allows a parameter once, but
    refusing costs a working phone its call)."""
    params = {}
    for name, value in pairs:
        if name in params:
            _duplicate_seen(name)
            continue
        params[name] = value
    return params


class URI:
    """A parsed URI.  Compare with ``==`` (RFC 3261 §19.1.4, simplified:
    scheme, user, password, host, port, and all parameters)."""

    __slots__ = ("scheme", "user", "password", "host", "port", "params",
                 "headers", "opaque", "_text")

    def __init__(self, scheme="sip", user=None, host=None, port=None,
                 params=None, headers=None, password=None, opaque=None):
        self.scheme = scheme.lower()
        self.user = user
        self.password = password
        self.host = host.lower() if host else host
        self.port = port
        self.params = params if params is not None else {}
        self.headers = headers if headers is not None else []
        self.opaque = opaque
        self._text = None

    # -- parsing -----------------------------------------------------------

    @classmethod
    def parse(cls, text):
        """Parse a URI; raise ``ParseError`` saying what is wrong."""
        m = sip_uri_parts(text)
        if m is not None:                   # the common shape: nothing to check
            return cls.plain(*m.groups(), text)
        return cls._parse_any(text)

    @classmethod
    def _parse_any(cls, text):
        """Any URI the grammar allows (escapes, password, headers, tel:,
        other schemes), or the reason not."""
        scheme, colon, rest = text.partition(":")
        if not colon or not _SCHEME_RE.match(scheme):
            raise ParseError("Malformed URI: no scheme")
        lscheme = scheme.lower()
        if lscheme in ("sip", "sips"):
            uri = cls._parse_sip(lscheme, rest)
        elif lscheme == "tel":
            uri = cls._parse_tel(rest)
        else:
            _illegal(rest, _OPAQUE_OK, "URI")
            uri = cls(lscheme, opaque=rest)
        uri._text = text
        return uri

    @classmethod
    def plain(cls, scheme, user, host, port, ptext, text):
        """The URI of a ``shapes.sip_uri_parts`` match (its groups, its
        text): no escapes to undo, nothing to check."""
        params = {}
        if ptext:
            params = _first_wins((name.lower(), value if eq else None)
                                 for name, eq, value in (p.partition("=")
                                                         for p in ptext[1:].split(";")))
        uri = cls(scheme, user, host, None if port is None else int(port), params)
        uri._text = text
        return uri

    @classmethod
    def _parse_sip(cls, scheme, rest):
        if not rest:
            raise ParseError("Malformed SIP URI: empty")
        user = password = None
        at = rest.find("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1:]
            u, sep, p = userinfo.partition(":")
            if not u:
                raise ParseError("Malformed SIP URI: empty user")
            user = _check(u, _USER_OK, "URI user")
            if sep:
                password = _check(p, _PASSWORD_OK, "URI password")
        headers = []
        q = rest.find("?")
        if q >= 0:
            rest, hpart = rest[:q], rest[q + 1:]
            for h in hpart.split("&"):
                name, eq, value = h.partition("=")
                if not name or not eq:
                    raise ParseError("Malformed header in SIP URI")
                headers.append((_check(name, _HEADER_OK, "URI header"),
                                _check(value, _HEADER_OK, "URI header")))
        hostport, *plist = rest.split(";")
        host, port = parse_hostport(hostport, "SIP URI host")
        params = _first_wins(_checked_params(plist))
        return cls(scheme, user, host, port, params, headers, password)

    @classmethod
    def _parse_tel(cls, rest):
        number, *plist = rest.split(";")
        if not number:
            raise ParseError("Malformed tel URI: no number")
        _illegal(rest, _TEL_OK, "tel URI")
        params = {}
        for p in plist:
            name, eq, value = p.partition("=")
            if not name:
                raise ParseError("Empty parameter in tel URI")
            params[unescape(name).lower()] = unescape(value) if eq else None
        return cls("tel", user=unescape(number), params=params)

    # -- serializing -------------------------------------------------------

    def __str__(self):
        if self._text is None:
            self._text = self._format()
        return self._text

    def _format(self):
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        if self.scheme == "tel":
            out = ["tel:", escape(self.user, _TEL_OK)]
        else:
            out = [self.scheme, ":"]
            if self.user is not None:
                out.append(escape(self.user, _USER_OK))
                if self.password is not None:
                    out += [":", escape(self.password, _PASSWORD_OK)]
                out.append("@")
            out.append(self.host)
            if self.port is not None:
                out += [":", str(self.port)]
        for name, value in self.params.items():
            out += [";", escape(name, _PARAM_OK)]
            if value is not None:
                out += ["=", escape(value, _PARAM_OK)]
        if self.headers:
            out.append("?")
            out.append("&".join(escape(n, _HEADER_OK) + "=" + escape(v, _HEADER_OK)
                                for n, v in self.headers))
        return "".join(out)

    def __repr__(self):
        return f"URI({str(self)!r})"

    # -- convenience -------------------------------------------------------

    @property
    def is_sip(self):
        return self.scheme in ("sip", "sips")

    @property
    def transport(self):
        """The ``transport`` parameter, lower-cased, or None."""
        t = self.params.get("transport")
        return t.lower() if t else None

    def replace(self, **changes):
        """A copy with some components changed (URIs are treated as values)."""
        fields = dict(scheme=self.scheme, user=self.user, host=self.host,
                      port=self.port, params=dict(self.params),
                      headers=list(self.headers), password=self.password,
                      opaque=self.opaque)
        fields.update(changes)
        return URI(**fields)

    def _key(self):
        return (self.scheme, self.user, self.password, self.host, self.port,
                tuple(sorted((k, v.lower() if v and k in ("transport", "user", "method",
                                                          "maddr") else v)
                             for k, v in self.params.items())),
                tuple(sorted(self.headers)), self.opaque)

    def __eq__(self, other):
        if not isinstance(other, URI):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())
