"""The common shapes of SIP values, recognized by one regex match each.

Nearly every Via, name-addr, SIP URI and CSeq a phone sends has the same
plain shape: no escapes, no quoted-pairs, no whitespace but the single
spaces of the grammar, no URI headers.  The patterns here match only such
values; each is a strict subset of what the full parsers of ``uri.py`` and
``values.py`` accept, and on that subset it means exactly what they mean
(value ranges included: ports, ``rport``, ``ttl``).  Anything else goes to
the full parsers, which give the answer or the reason a value is wrong: a
shape never decides an error (tests/test_sip_shapes.py holds them to it).

``*_shape`` only checks (``Message.validate``: the typed view is built when
asked for); ``*_parts`` gives the groups to build from.  The patterns are
anchored, and a repeat is possessive wherever the next element cannot
start with a character it takes, so a match never backtracks into what it
has taken.  Fragments follow RFC 3261 §25.1 (RFC 5118 for IPv6).
"""

import re

__all__ = ["via_shape", "via_parts", "name_addr_shape", "name_addr_parts", "sip_uri_shape",
           "sip_uri_parts", "cseq_shape", "flat_params", "TOKEN_CHARS"]

#: token (§25.1): alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~"
TOKEN_CHARS = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
               "0123456789-.!%*_+`'~")
# Possessive repeats (``++``, ``*+``) never give back what they took: right
# wherever the next element cannot start with a character the repeat
# takes, and much cheaper for the regex engine than keeping each step.
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]++"
# hostname / IPv4address (§25.1: labels of alphanum with inner hyphens), or
# an IPv6 reference (RFC 5118 §4: its hex part gives back the digits of a
# dotted IPv4 tail, so it is not possessive); ASCII digits only.
_LABEL = r"[A-Za-z0-9]++(?:-++[A-Za-z0-9]++)*+"
_HOST = (rf"(?:{_LABEL}(?:\.{_LABEL})*+\.?"
         r"|\[[0-9A-Fa-f:]+(?:[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})?\])")
# port (§25.1) as the parsers take it: up to five digits, at most 65535.
_PORT = (r"(?:[0-9]{1,4}+(?![0-9])"
         r"|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])")
_TTL = r"(?:[0-9]{1,2}+(?![0-9])|[01][0-9]{2}|2[0-4][0-9]|25[0-5])"      # §20.42: 0-255
# user (§25.1 unreserved / user-unreserved, without ';', '?', ',' and
# escapes: an addr-spec may hold none of the last three, §20.10).
_USER = r"[A-Za-z0-9\-_.!~*'\(\)&=+$/]++"
# uri-parameter (§25.1 paramchar, without escapes).
_PCHAR = r"[A-Za-z0-9\-_.!~*'\(\)\[\]/:&+$]"
_URI_PARAMS = rf"(?:;{_PCHAR}++(?:={_PCHAR}*+)?)*+"
# generic-param (§25.1): a token, or a quoted string without quoted-pairs.
_VALUE = r"[A-Za-z0-9\-.!%*_+`'~:\[\]/@?]++"
_PARAMS = rf"(?:;{_TOKEN}(?:=(?:{_VALUE}|\"[^\"\\]*+\"))?)*+"
# via-params (§20.42, RFC 3581): rport and ttl in range, the others as above.
_RPORT, _TTL_NAME = "[Rr][Pp][Oo][Rr][Tt]", "[Tt][Tt][Ll]"      # names: any case
_VIA_PARAMS = (rf"(?:;(?:{_RPORT}(?:={_PORT})?|{_TTL_NAME}(?:={_TTL})?"
               rf"|(?!(?:{_RPORT}|{_TTL_NAME})(?![A-Za-z0-9\-.!%*_+`'~])){_TOKEN}(?:={_VALUE})?)"
               r"(?=;|\Z))*+")
_SIP_URI = rf"(sips?):(?:({_USER})@)?({_HOST})(?::({_PORT}))?"

_CAPTURE = re.compile(r"(?<!\\)\((?!\?)")      # an unescaped "(" opening a group


def _shapes(pattern):
    """(fullmatch giving the groups, to build from; fullmatch of the same
    pattern without captures: cheaper, to check only)."""
    return re.compile(pattern).fullmatch, re.compile(_CAPTURE.sub("(?:", pattern)).fullmatch


#: SIP-URI without password, escapes or headers (§19.1.1).  Groups: scheme,
#: user, host, port, parameters.
sip_uri_parts, sip_uri_shape = _shapes(rf"{_SIP_URI}({_URI_PARAMS})")

#: via-parm (§20.42) of SIP/2.0.  Groups: transport, host, port, parameters.
via_parts, via_shape = _shapes(rf"SIP/2\.0/({_TOKEN}) ({_HOST})(?::({_PORT}))?({_VIA_PARAMS})")

#: CSeq (§20.16) with at most nine digits (so within 2**32 - 1) and one
#: space.  Groups: number, method.
cseq_shape = re.compile(rf"([0-9]{{1,9}}) ({_TOKEN})").fullmatch

#: name-addr with an optional display name (quoted without quoted-pairs, or
#: tokens), or an addr-spec (§20.10: its ';' parameters are the header's).
#: Groups: 1 quoted display, 2 token display, 3 <URI> (4-7 its scheme,
#: user, host, port; its own parameters follow the port inside group 3),
#: 8 addr-spec (9-12 likewise), 13 header parameters.
name_addr_parts, name_addr_shape = _shapes(
    rf"(?:(?:\"([^\"\\]*+)\" *+|({_TOKEN}(?: ++{_TOKEN})*+) *+)?<({_SIP_URI}{_URI_PARAMS})>"
    rf"|({_SIP_URI}))({_PARAMS})")


def flat_params(text):
    """``;name[=value]`` of a matched shape (no quotes) as a dict: names
    lower-cased, a flag maps to None, a repeated name keeps its last value
    (as ``values.parse_params`` does)."""
    params = {}
    if text:
        for part in text[1:].split(";"):
            name, eq, value = part.partition("=")
            params[name.lower()] = value if eq else None
    return params
