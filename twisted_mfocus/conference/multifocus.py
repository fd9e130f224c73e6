"""The ``inet-ci-multifocus-ext`` event package's documents (docs/design.md,
"Consistency model").

Foci subscribe to each other with this package and get an RFC 4575
conference-info document (full or partial) whose last child is one
``<mf:multifocus>`` element in our namespace, where the RFC 4575 schema
allows ##other elements (RFC 4575 §5.1), so an ordinary RFC 4575 parser
still reads the users.  That element carries the replicated state
(replica.py): in a full document one ``<mf:partition writer seq>`` per
writer (its ``<mf:focus>`` and ``<mf:member>`` s), in a partial one
``<mf:delta writer seq>`` s holding ``<mf:set><mf:member/></mf:set>``,
``<mf:del endpoint/>`` and ``<mf:focus/>`` operations in order.
multifocus-ext.xsd (shipped with the package) is the reference.

Round trips are exact: an optional attribute that is absent is None,
present and empty is ""; ``when`` is written with repr(float), which reads
back as the same float; tuples keep their order.  The one loss: characters
XML 1.0 cannot carry (controls, lone surrogates) are sent as U+FFFD.

Parsing treats the body as hostile: size checked first, UTF-8 only, no DTD
(so no entity expansion at all, RFC 7303 §10), lxml with entities and
network off, counts bounded while walking, every value checked.  Anything
wrong is a ``MultifocusError`` saying what, for a log line or a 400 reason.
"""

import math
import re
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Optional

from lxml import etree

from .info import NAMESPACE as _CI_NAMESPACE, _attr
from .model import ENDPOINT_STATUSES, JOINING_METHODS, MEDIA_STATUSES
from .replica import (DEL, FOCUS, SET, Delta, FocusRecord, FocusRole, FocusState,
                      MemberRecord, Partition, Snapshot)

#: an SRTP call's profile, as the XSD's srtp-profile allows
SRTP_PROFILES = frozenset(("RTP/SAVP", "RTP/SAVPF", "RTP/AVP"))

__all__ = ["EVENT", "CONTENT_TYPE", "NAMESPACE", "XSD_PATH", "MultifocusError", "Parsed",
           "render_snapshot", "render_deltas", "parse", "schema", "MAX_BODY",
           "MAX_PARTITIONS", "MAX_MEMBERS", "MAX_DELTAS", "MAX_OPS", "MAX_LINKS", "MAX_ROUTE"]

FOCUS_ROLES, FOCUS_STATES = frozenset(FocusRole), frozenset(FocusState)
FULL, PARTIAL = "full", "partial"       # RFC 4575 §5.1 document state

EVENT = "inet-ci-multifocus-ext"
CONTENT_TYPE = "application/inet-ci-multifocus-ext+xml"
NAMESPACE = "urn:x-mfocus:params:xml:ns:multifocus-ext"
XSD_PATH = Path(__file__).with_name("multifocus-ext.xsd")

MAX_BODY = 1024 * 1024      # bytes; the SIP parser's body limit (sip/message.py)
MAX_PARTITIONS = 64         # partitions (foci) in a full document
MAX_MEMBERS = 4096          # member records in a full document, all partitions
MAX_DELTAS = 1024           # deltas in a partial document
MAX_OPS = 8192              # operations in a partial document, all deltas
MAX_LINKS = MAX_PARTITIONS  # links of one focus record
MAX_ROUTE = 32              # route entries of one member's dialog

_MAX_UINT = 0xFFFFFFFF            # xs:unsignedInt: capacity, load, RFC 4575 version
_MAX_SEQ = 0xFFFFFFFFFFFFFFFF     # xs:unsignedLong: seq
_MF = "{%s}" % NAMESPACE
_ROOT = "{%s}conference-info" % _CI_NAMESPACE
_OPEN = f'<mf:multifocus xmlns:mf="{NAMESPACE}">'
_CLOSE = "</mf:multifocus>"

# The same patterns as the xsd's sip-uri and unix-time types.
_SIP_URI = re.compile(r"[Ss][Ii][Pp][Ss]?:[^ \t\n\r]+")
_UINT = re.compile(r"[0-9]{1,20}")
_FLOAT = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
#: a codec as an rtpmap names it (the xsd's codec type)
_CODEC = re.compile(r"[A-Za-z0-9._-]{1,32}/[0-9]{1,6}(/[0-9]{1,2})?")
#: a TLS listener as host:port (an IPv6 host in brackets)
_HOSTPORT = re.compile(r"(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,253}):[0-9]{1,5}")


class MultifocusError(ValueError):
    """A multifocus document that cannot be used; the message says why."""


class Parsed(NamedTuple):
    """A parsed document: the conference-info root's ``state``, ``entity``
    (``conference``) and ``version``, and the extension's content."""

    state: str                      # "full" or "partial"
    conference: str
    version: int
    snapshot: Optional[Snapshot]    # full documents only
    deltas: list                    # partial documents only


# -- rendering -----------------------------------------------------------
# Our own records: a bad value is a bug, so ValueError (not MultifocusError),
# raised here rather than in every peer that would reject the document.

def _check(ok, what, value):
    if not ok:
        raise ValueError(f"cannot render {what} {value!r}")


def _uint(what, value, top=_MAX_UINT):
    _check(isinstance(value, int) and 0 <= value <= top, what, value)
    return "%d" % value


def _sip(what, value):
    _check(isinstance(value, str) and _SIP_URI.fullmatch(value), what, value)
    return _attr(value)


def _tls(value):
    _check(isinstance(value, str) and _HOSTPORT.fullmatch(value), "tls", value)
    return value


def _focus(out, f):
    _check(f.role in FOCUS_ROLES, "focus role", f.role)
    _check(f.state in FOCUS_STATES, "focus state", f.state)
    epoch = f' epoch="{_uint("epoch", f.epoch)}"' if f.epoch else ""
    tls = f' tls="{_tls(f.tls)}"' if f.tls else ""
    out.append(f'<mf:focus uri="{_sip("focus uri", f.uri)}" role="{f.role}" '
               f'capacity="{_uint("capacity", f.capacity)}" '
               f'load="{_uint("load", f.load)}" state="{f.state}"{epoch}{tls}>')
    out.extend(f'<mf:link uri="{_sip("link", link)}"/>' for link in f.links)
    out.extend(f'<mf:down uri="{_sip("down", uri)}" epoch="{_uint("down epoch", e)}"/>'
               for uri, e in f.down)
    out.append("</mf:focus>")


def _member(out, m):
    _check(m.status in ENDPOINT_STATUSES, "endpoint status", m.status)
    _check(m.joining_method in JOINING_METHODS, "joining-method", m.joining_method)
    out.append(f'<mf:member endpoint="{_attr(m.endpoint)}" user="{_attr(m.user)}" '
               f'status="{m.status}" joining-method="{m.joining_method}"')
    if m.when is not None:
        when = float(m.when)
        _check(math.isfinite(when), "when", m.when)
        out.append(f' when="{when!r}"')
    if m.by is not None:
        out.append(f' by="{_attr(m.by)}"')
    if m.media is not None:
        _check(m.media in MEDIA_STATUSES, "media status", m.media)
        out.append(f' media="{m.media}"')
    if m.srtp is not None:
        _check(m.srtp in SRTP_PROFILES, "srtp profile", m.srtp)
        out.append(f' srtp="{m.srtp}"')
    if m.codec is not None:
        _check(isinstance(m.codec, str) and _CODEC.fullmatch(m.codec), "codec", m.codec)
        out.append(f' codec="{m.codec}"')
    if m.epoch:
        out.append(f' epoch="{_uint("epoch", m.epoch)}"')
    dialog = [f' {name}="{_attr(value)}"' for name, value in (
        ("call-id", m.call_id), ("local-tag", m.local_tag), ("remote-tag", m.remote_tag),
        ("remote-target", m.remote_target)) if value is not None]
    if not dialog and not m.route:
        out.append("/>")
        return
    out.append("><mf:dialog%s>" % "".join(dialog))
    out.extend(f'<mf:route uri="{_attr(r)}"/>' for r in m.route)
    out.append("</mf:dialog></mf:member>")


def render_snapshot(snapshot):
    """The extension element of a full document: every partition."""
    out = [_OPEN]
    for writer, part in snapshot.partitions.items():
        out.append(f'<mf:partition writer="{_sip("writer", writer)}" '
                   f'seq="{_uint("seq", part.seq, _MAX_SEQ)}">')
        if part.focus is not None:
            _focus(out, part.focus)
        for member in part.members.values():
            _member(out, member)
        out.append("</mf:partition>")
    out.append(_CLOSE)
    return "".join(out).encode("utf-8")


def render_deltas(deltas):
    """The extension element of a partial document: the deltas in order."""
    out = [_OPEN]
    for delta in deltas:
        out.append(f'<mf:delta writer="{_sip("writer", delta.writer)}" '
                   f'seq="{_uint("seq", delta.seq, _MAX_SEQ)}">')
        for op, value in delta.ops:
            if op == SET:
                out.append("<mf:set>")
                _member(out, value)
                out.append("</mf:set>")
            elif op == DEL:
                out.append(f'<mf:del endpoint="{_attr(value)}"/>')
            else:
                _check(op == FOCUS, "operation", op)
                _focus(out, value)
        out.append("</mf:delta>")
    out.append(_CLOSE)
    return "".join(out).encode("utf-8")


# -- parsing -------------------------------------------------------------

def _show(value):
    """A value from the wire, quoted and shortened for an error message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:76] + "...'"


def _ours(el):
    """(local name, element) of ``el``'s children in our namespace.

    Other namespaces are extensions we do not know: skipped (RFC 4575 §5.1
    extensibility).  Comments and PIs were dropped by the parser."""
    for child in el:
        tag = child.tag
        if isinstance(tag, str) and tag.startswith(_MF):
            yield tag[len(_MF):], child


def _children(el, name, limit):
    """``el``'s children in our namespace: all ``<name>``, at most ``limit``."""
    found = []
    for tag, child in _ours(el):
        if tag != name:
            raise MultifocusError(f"unexpected element <{tag}> in <{_local(el)}>")
        if len(found) >= limit:
            raise MultifocusError(f"more than {limit} <{name}> in <{_local(el)}>")
        found.append(child)
    return found


def _local(el):
    return el.tag.rpartition("}")[2]


def _get(el, name, convert=None, optional=False):
    """Attribute ``name`` of ``el``, through ``convert`` (which raises
    ValueError saying what is wrong); None if absent and ``optional``."""
    value = el.get(name)
    if value is None:
        if optional:
            return None
        raise MultifocusError(f"<{_local(el)}> has no {name} attribute")
    try:
        return value if convert is None else convert(value)
    except ValueError as e:
        raise MultifocusError(f"<{_local(el)}> {name}={_show(value)} {e}") from None


def _uint_to(top):
    def convert(value):
        if _UINT.fullmatch(value) is None or int(value) > top:
            raise ValueError(f"is not an integer from 0 to {top}")
        return int(value)
    return convert


def _enum(kind):
    def convert(value):
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"is not one of {', '.join(sorted(kind))}") from None
    return convert


def _one_of(allowed):
    def convert(value):
        if value not in allowed:
            raise ValueError(f"is not one of {', '.join(sorted(allowed))}")
        return value
    return convert


def _sip_uri(value):
    if _SIP_URI.fullmatch(value) is None:
        raise ValueError("is not a sip: or sips: URI")
    return value


def _codec(value):
    if _CODEC.fullmatch(value) is None:
        raise ValueError("is not encoding/clock[/channels]")
    return value


def _hostport(value):
    if _HOSTPORT.fullmatch(value) is None or not 0 < int(value.rpartition(":")[2]) < 65536:
        raise ValueError("is not host:port")
    return value


def _unix_time(value):
    if len(value) > 40 or _FLOAT.fullmatch(value) is None or math.isinf(float(value)):
        raise ValueError("is not a finite number")
    return float(value)


_UINT32, _UINT64 = _uint_to(_MAX_UINT), _uint_to(_MAX_SEQ)


def _parse_focus(el):
    links, down = [], []
    for tag, child in _ours(el):
        if tag == "link" and not down:
            links.append(_get(child, "uri", _sip_uri))
        elif tag == "down":
            down.append((_get(child, "uri", _sip_uri), _get(child, "epoch", _UINT32)))
        else:
            raise MultifocusError(f"unexpected element <{tag}> in <focus>")
        if len(links) > MAX_LINKS or len(down) > MAX_LINKS:
            raise MultifocusError(f"more than {MAX_LINKS} <{tag}> in <focus>")
    return FocusRecord(
        _get(el, "uri", _sip_uri), _get(el, "role", _enum(FocusRole)),
        _get(el, "capacity", _UINT32), _get(el, "load", _UINT32),
        _get(el, "state", _enum(FocusState)), tuple(links),
        _get(el, "epoch", _UINT32, optional=True) or 0, tuple(down),
        _get(el, "tls", _hostport, optional=True))


def _parse_member(el):
    dialog = _children(el, "dialog", 1)
    d = dialog[0].get if dialog else (lambda name: None)
    route = _children(dialog[0], "route", MAX_ROUTE) if dialog else ()
    return MemberRecord(
        _get(el, "endpoint"), _get(el, "user"), _get(el, "status", _one_of(ENDPOINT_STATUSES)),
        _get(el, "joining-method", _one_of(JOINING_METHODS)),
        _get(el, "when", _unix_time, optional=True), _get(el, "by", optional=True),
        _get(el, "media", _one_of(MEDIA_STATUSES), optional=True),
        d("call-id"), d("local-tag"), d("remote-tag"), d("remote-target"),
        tuple(_get(r, "uri") for r in route), _get(el, "epoch", _UINT32, optional=True) or 0,
        _get(el, "srtp", _one_of(SRTP_PROFILES), optional=True),
        _get(el, "codec", _codec, optional=True))


def _parse_snapshot(ext):
    partitions = {}
    count = 0
    for el in _children(ext, "partition", MAX_PARTITIONS):
        writer = _get(el, "writer", _sip_uri)
        if writer in partitions:
            raise MultifocusError(f"two partitions of writer {_show(writer)}")
        focus, members = None, {}
        for tag, child in _ours(el):
            if tag == "member":
                count += 1
                if count > MAX_MEMBERS:
                    raise MultifocusError(f"more than {MAX_MEMBERS} members")
                member = _parse_member(child)
                if member.endpoint in members:
                    raise MultifocusError(f"partition {_show(writer)} has two members "
                                          f"{_show(member.endpoint)}")
                members[member.endpoint] = member
            elif tag == "focus":
                if focus is not None:
                    raise MultifocusError(f"partition {_show(writer)} has two <focus>")
                focus = _parse_focus(child)
            else:
                raise MultifocusError(f"unexpected element <{tag}> in <partition>")
        partitions[writer] = Partition(_get(el, "seq", _UINT64), focus, members)
    return Snapshot(partitions)


def _parse_deltas(ext):
    deltas = []
    count = 0
    for el in _children(ext, "delta", MAX_DELTAS):
        ops = []
        for op, child in _ours(el):
            count += 1
            if count > MAX_OPS:
                raise MultifocusError(f"more than {MAX_OPS} operations")
            if op == SET:
                member = _children(child, "member", 1)
                if not member:
                    raise MultifocusError("<set> without a <member>")
                ops.append((SET, _parse_member(member[0])))
            elif op == DEL:
                ops.append((DEL, _get(child, "endpoint")))
            elif op == FOCUS:
                ops.append((FOCUS, _parse_focus(child)))
            else:
                raise MultifocusError(f"unknown operation <{op}> in <delta>")
        deltas.append(Delta(_get(el, "writer", _sip_uri), _get(el, "seq", _UINT64),
                            tuple(ops)))
    return deltas


def parse(body):
    """Read a NOTIFY body of the package.

    ``state``, ``entity`` and ``version`` come from the conference-info root
    (RFC 4575 §5.1; ``version``, optional there, is required here: a focus
    orders NOTIFYs and detects lost ones by it); the replicated state
    comes only from the extension element.
    """
    if not isinstance(body, (bytes, bytearray)):
        raise TypeError(f"body must be bytes, not {type(body).__name__}")
    if len(body) > MAX_BODY:
        raise MultifocusError(f"body of {len(body)} bytes is over {MAX_BODY}")
    # With UTF-8 forced, a DTD cannot hide from this test: no entity is
    # ever declared, so none can be expanded (billion laughs, XXE).
    if b"<!DOCTYPE" in body:
        raise MultifocusError("a DTD is not allowed")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False,
                             remove_comments=True, remove_pis=True, load_dtd=False,
                             encoding="utf-8")
    try:
        root = etree.fromstring(bytes(body), parser)
    except (etree.LxmlError, ValueError) as e:
        raise MultifocusError(f"not an XML document: {e}") from None
    if root.getroottree().docinfo.internalDTD is not None:
        raise MultifocusError("a DTD is not allowed")
    if root.tag != _ROOT:
        raise MultifocusError(f"root element is {_show(root.tag)}, not RFC 4575 conference-info")
    entity = _get(root, "entity")
    state = _get(root, "state", _one_of((FULL, PARTIAL)), optional=True) or FULL
    version = _get(root, "version", _UINT32)
    ext = _children(root, "multifocus", 1)
    if not ext:
        raise MultifocusError("no <multifocus> element in the conference-info document")
    ext = ext[0]
    if state == FULL:
        return Parsed(state, entity, version, _parse_snapshot(ext), [])
    return Parsed(state, entity, version, None, _parse_deltas(ext))


@lru_cache(maxsize=None)
def schema():
    """multifocus-ext.xsd as an lxml XMLSchema (tests and debug checks)."""
    return etree.XMLSchema(etree.parse(str(XSD_PATH)))
