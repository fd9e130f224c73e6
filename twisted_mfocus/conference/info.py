"""RFC 4575 conference-info documents, full and partial, from the model.

Why a module of string templates: a focus sends one NOTIFY per subscriber
per change batch, so a document is rendered once per batch and then only
stamped with each subscription's version (RFC 4575 ``version`` attribute,
one counter per subscription).  ``Rendered`` holds the bytes split at the
version attribute; ``with_version`` is a concatenation.

Rules:

- Element order is the order of the RFC 4575 XML schema (conference-info:
  conference-description, conference-state, users; endpoint: display-text,
  status, joining-method, joining-info, media, call-info; media: type, label,
  src-id, status).  Every document validates against that schema.
- Every text and attribute value goes through ``_text``/``_attr``: XML
  escaping, and characters XML 1.0 cannot carry become U+FFFD, so a URI or
  display name from the wire can never break the document.
- Each user's <user> element is cached as bytes on ``User.fragment``; the
  model clears it when the user changes, so a full document costs a join.
- Partial documents (state="partial") carry the new user-count and only the
  users of the batch: a changed user whole (state="full", the subscriber
  replaces it) and a deleted one as <user entity=... state="deleted"/>.  Their
  <users> says state="partial" so a subscriber keeps the users not listed.
"""

import re
import time

__all__ = ["CONTENT_TYPE", "NAMESPACE", "Rendered", "render_full", "render_partial",
           "full_document", "partial_document"]

CONTENT_TYPE = "application/conference-info+xml"
NAMESPACE = "urn:ietf:params:xml:ns:conference-info"

_PROLOG = ('<?xml version="1.0" encoding="UTF-8"?>\n'
           f'<conference-info xmlns="{NAMESPACE}" entity="')
_END = "</conference-info>\n"
_MAX_VERSION = 0xFFFFFFFF   # version is an xs:unsignedInt

# Characters outside the XML 1.0 Char production (controls, lone surrogates,
# U+FFFE/U+FFFF): not even a character reference can carry them.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value):
    """Escape element content."""
    s = str(value)
    if _NOT_XML.search(s) is not None:
        s = _NOT_XML.sub("\ufffd", s)
    # &#13; keeps a CR that the parser would otherwise turn into LF.
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\r", "&#13;"))


def _attr(value):
    """Escape a double-quoted attribute value (whitespace kept as written)."""
    return (_text(value).replace('"', "&quot;").replace("\n", "&#10;")
            .replace("\t", "&#9;"))


def _when(unix_time):
    """A float Unix time as xs:dateTime in UTC, whole seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_time))


def _element(out, name, value):
    if value is not None:
        out.append(f"<{name}>{_text(value)}</{name}>")


def _media(out, media):
    out.append(f'<media id="{_attr(media.id)}">')
    _element(out, "display-text", media.display_text)
    _element(out, "type", media.type)
    _element(out, "label", media.label)
    _element(out, "src-id", media.src_id)
    _element(out, "status", media.status)
    out.append("</media>")


def _endpoint(out, ep, dialogs):
    out.append(f'<endpoint entity="{_attr(ep.entity)}" state="full">')
    _element(out, "display-text", ep.display_text)
    _element(out, "status", ep.status)
    _element(out, "joining-method", ep.joining_method)
    if ep.when is not None or ep.by is not None:
        out.append("<joining-info>")
        if ep.when is not None:
            out.append(f"<when>{_when(ep.when)}</when>")
        _element(out, "by", ep.by)
        out.append("</joining-info>")
    for media in ep.media:
        _media(out, media)
    if dialogs and ep.call_id is not None:
        # The schema requires all three; a tag not yet known (early dialog)
        # is sent empty rather than leaving the dialog out.
        out.append("<call-info><sip>")
        out.append(f"<call-id>{_text(ep.call_id)}</call-id>")
        out.append(f"<from-tag>{_text(ep.from_tag or '')}</from-tag>")
        out.append(f"<to-tag>{_text(ep.to_tag or '')}</to-tag>")
        out.append("</sip></call-info>")
    out.append("</endpoint>")


def user_fragment(user, dialogs=True):
    """The user's <user state="full"> element as UTF-8 bytes, cached on it;
    ``dialogs``: with each endpoint's <call-info> (RFC 4575 §5.7.5: the
    dialog ids, enough to build a Replaces; only members and foci get them)."""
    cached = user.fragment
    if cached is None:
        cached = user.fragment = [None, None]
    fragment = cached[dialogs]
    if fragment is None:
        out = [f'<user entity="{_attr(user.entity)}" state="full">']
        _element(out, "display-text", user.display_text)
        for ep in user.endpoints.values():
            _endpoint(out, ep, dialogs)
        out.append("</user>")
        fragment = cached[dialogs] = "".join(out).encode("utf-8")
    return fragment


def _deleted_fragment(entity):
    return f'<user entity="{_attr(entity)}" state="deleted"/>'.encode("utf-8")


class Rendered:
    """A rendered document without its version: ``head`` ends inside the
    version attribute's opening quote, ``tail`` starts at its closing one."""

    __slots__ = ("head", "tail")

    def __init__(self, head, tail):
        self.head = head
        self.tail = tail

    def with_version(self, version):
        """The document with ``version`` (0 .. 2**32-1) stamped in."""
        if not 0 <= version <= _MAX_VERSION:
            raise ValueError(f"version {version!r} is not an xs:unsignedInt")
        return b"%b%d%b" % (self.head, version, self.tail)

    def __len__(self):
        return len(self.head) + len(self.tail)

    def __repr__(self):
        return f"<Rendered {len(self)} bytes + version>"


def _head(conference, state):
    return (f'{_PROLOG}{_attr(conference.uri)}" state="{state}" version="'
            ).encode("utf-8")


def render_full(conference, extra=b"", dialogs=True, users=True):
    """The whole conference, state="full".

    ``extra``: already rendered elements in another namespace (the
    multifocus extension), placed last where the schema allows ##other.
    ``dialogs``: with the endpoints' dialog ids (``user_fragment``).
    ``users``: False leaves <users> out (RFC 4575 §5: optional), for the
    foci's documents, whose extension carries every member already.
    """
    out = ['">', "<conference-description>"]
    _element(out, "subject", conference.subject)
    out.append("<conf-uris>")
    for uri in conference.uris or (conference.uri,):    # RFC 4575 §5.3.1
        out.append(f"<entry><uri>{_text(uri)}</uri><purpose>participation</purpose></entry>")
    out.append("</conf-uris></conference-description>")
    out.append(f"<conference-state><user-count>{conference.user_count}</user-count>"
               "<active>true</active></conference-state>")
    parts = ["".join(out).encode("utf-8")]
    if users:
        parts.append(b"<users>")
        parts.extend(user_fragment(u, dialogs) for u in conference.users.values())
        parts.append(b"</users>")
    parts.append(extra)
    parts.append(_END.encode("ascii"))
    return Rendered(_head(conference, "full"), b"".join(parts))


def render_partial(conference, changes, extra=b"", dialogs=True):
    """The changes of one batch (``Conference.take_changes()``), state="partial".

    A user listed as changed but gone by now is sent as deleted.  With
    ``changes`` None there is no <users> element (RFC 4575 §5: every child
    of <conference-info> is optional): the multifocus extension's deltas
    carry the members, and repeating them would double every NOTIFY.
    """
    parts = [(f'"><conference-state><user-count>{conference.user_count}</user-count>'
              '</conference-state>').encode("utf-8")]
    if changes is not None:
        users = conference.users
        parts.append(b'<users state="partial">')
        for entity in changes.changed:
            user = users.get(entity)
            parts.append(_deleted_fragment(entity) if user is None else
                         user_fragment(user, dialogs))
        parts.extend(_deleted_fragment(entity) for entity in changes.deleted)
        parts.append(b"</users>")
    parts.append(extra)
    parts.append(_END.encode("ascii"))
    return Rendered(_head(conference, "partial"), b"".join(parts))


def full_document(conference, version):
    """The full document with ``version``: ``render_full(c).with_version(v)``."""
    return render_full(conference).with_version(version)


def partial_document(conference, changes, version):
    """The partial document of ``changes`` with ``version``."""
    return render_partial(conference, changes).with_version(version)
