"""The conference model: users, their endpoints and media (RFC 4575 §5.7).

Rules of this module:

- Pure data and bookkeeping: no Twisted, no reactor, no I/O, no clock.  Times
  are given by the caller as float Unix times (``Endpoint.when``).
- The ``Conference`` is the one writer.  Every change goes through
  ``set_endpoint``, ``update_endpoint`` or ``remove_endpoint``; each records the
  user as changed (or deleted) so the notifier can send a partial document
  (RFC 4575 state="partial") for the batch, and clears the user's cached XML
  fragment.
  Changing an ``Endpoint`` or ``Media`` object directly bypasses both: do not.
- Values that end up in an enumerated XML field (endpoint status §5.7.2,
  joining-method, media status §5.7.4) are checked when set, so a
  document built from the model always validates.
- Sizes are bounded: ``max_users`` users per conference (``ConferenceFull``).
"""

import enum
from typing import NamedTuple

__all__ = ["Media", "Endpoint", "User", "Conference", "Changes", "ConferenceFull",
           "ENDPOINT_STATUSES", "JOINING_METHODS", "JoiningMethod", "MEDIA_STATUSES"]

#: RFC 4575 §5.7.2 <status> of an endpoint.
ENDPOINT_STATUSES = frozenset((
    "connected", "disconnected", "on-hold", "muted-via-focus", "pending",
    "alerting", "dialing-in", "dialing-out", "disconnecting"))


class JoiningMethod(enum.StrEnum):
    """RFC 4575 §5.7 <joining-method> of an endpoint."""

    DIALED_IN = "dialed-in"
    DIALED_OUT = "dialed-out"
    FOCUS_OWNER = "focus-owner"


JOINING_METHODS = frozenset(JoiningMethod)
#: RFC 4575 §5.7.4 media <status> (the SDP directions).
MEDIA_STATUSES = frozenset(("sendrecv", "sendonly", "recvonly", "inactive"))


class ConferenceFull(Exception):
    """A new user would take the conference beyond its ``max_users``."""


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(sorted(allowed))}")
    return value


class Media:
    """One media stream of an endpoint (RFC 4575 §5.7.4).

    ``id`` is the media's identifier (the ``id`` attribute), ``src_id`` the
    SSRC or other source id the mixer gives it, ``label`` the SDP label
    (RFC 4574) when there is one; ``display_text`` (RFC 4575 §5.7.4
    display-text) names its codec as SDP does (``opus/48000/2``).
    """

    __slots__ = ("id", "type", "src_id", "status", "label", "display_text")

    def __init__(self, id, type="audio", src_id=None, status="sendrecv", label=None,
                 display_text=None):
        self.id = str(id)
        self.type = type
        self.src_id = None if src_id is None else str(src_id)
        self.status = _choice("media status", status, MEDIA_STATUSES)
        self.label = label
        self.display_text = display_text

    def __eq__(self, other):
        if not isinstance(other, Media):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __hash__(self):
        return hash((self.id, self.type, self.src_id, self.status, self.label,
                     self.display_text))

    def __repr__(self):
        return (f"Media({self.id!r}, type={self.type!r}, src_id={self.src_id!r}, "
                f"status={self.status!r}, label={self.label!r})")


def _media_tuple(media):
    media = tuple(media)
    for m in media:
        if not isinstance(m, Media):
            raise TypeError(f"media must be Media objects, not {type(m).__name__}")
    return media


class Endpoint:
    """One SIP dialog of a user with the focus (RFC 4575 §5.7).

    ``entity`` names the endpoint (typically the Contact URI of the dialog);
    ``when`` (float Unix time) and ``by`` (URI) fill <joining-info>;
    ``call_id``, ``from_tag`` and ``to_tag`` fill <call-info><sip>.
    """

    __slots__ = ("entity", "status", "joining_method", "when", "by", "display_text",
                 "call_id", "from_tag", "to_tag", "media")

    def __init__(self, entity, status="connected", joining_method="dialed-in",
                 when=None, by=None, display_text=None, call_id=None, from_tag=None,
                 to_tag=None, media=()):
        self.entity = str(entity)
        self.status = _choice("endpoint status", status, ENDPOINT_STATUSES)
        self.joining_method = _choice("joining-method", joining_method, JOINING_METHODS)
        self.when = None if when is None else float(when)
        self.by = by
        self.display_text = display_text
        self.call_id = call_id
        self.from_tag = from_tag
        self.to_tag = to_tag
        self.media = _media_tuple(media)

    def _set(self, name, value):
        """Set one field with the same checks as ``__init__``."""
        if name == "status":
            value = _choice("endpoint status", value, ENDPOINT_STATUSES)
        elif name == "joining_method":
            value = _choice("joining-method", value, JOINING_METHODS)
        elif name == "media":
            value = _media_tuple(value)
        elif name == "when":
            value = None if value is None else float(value)
        elif name == "entity" or name not in self.__slots__:
            raise TypeError(f"Endpoint has no changeable field {name!r}")
        setattr(self, name, value)

    def __repr__(self):
        return (f"Endpoint({self.entity!r}, status={self.status!r}, "
                f"call_id={self.call_id!r}, media={self.media!r})")


class User:
    """A member of the conference (RFC 4575 <user>): its URI and its endpoints.

    ``fragment`` is a cache owned by the renderer (info.py): the user's XML,
    or None.  The conference clears it whenever the user changes.
    """

    __slots__ = ("entity", "display_text", "endpoints", "fragment")

    def __init__(self, entity, display_text=None):
        self.entity = str(entity)
        self.display_text = display_text
        self.endpoints = {}
        self.fragment = None

    def __repr__(self):
        return f"User({self.entity!r}, endpoints={list(self.endpoints)!r})"


class Changes(NamedTuple):
    """Users changed (still present) and deleted since the last ``take_changes``."""

    changed: list
    deleted: list

    def __bool__(self):
        return bool(self.changed or self.deleted)


class Conference:
    """One conference: its URI, subject and users, and the record of changes.

    ``users`` keeps join order (a user that leaves and comes back goes last).
    Changes are recorded per user, not per field: the partial document of a
    batch carries each changed user whole (state="full"), which is simpler
    for subscribers and costs little since users are small.
    """

    def __init__(self, name, uri, subject=None, max_users=1000):
        if max_users < 1:
            raise ValueError(f"max_users must be at least 1, not {max_users!r}")
        self.name = name
        self.uri = str(uri)
        self.subject = subject
        self.max_users = max_users
        #: where the conference may be reached (RFC 4575 conf-uris): its
        #: URI at each live focus (mesh.py), or, alone, its own URI
        self.uris = None
        self.users = {}
        self._changed = {}   # user entity -> None, kept in order of first change
        self._deleted = {}

    @property
    def user_count(self):
        return len(self.users)

    def __repr__(self):
        return f"Conference({self.name!r}, {self.uri!r}, users={len(self.users)})"

    def _touch(self, user):
        user.fragment = None
        self._deleted.pop(user.entity, None)
        self._changed[user.entity] = None

    def set_endpoint(self, user_entity, endpoint, display_text=None):
        """Add or replace ``endpoint`` of a user, creating the user if new.

        ``display_text``, when given, becomes the user's display text.
        Raises ConferenceFull when a new user would exceed ``max_users``.
        """
        if not isinstance(endpoint, Endpoint):
            raise TypeError(f"endpoint must be an Endpoint, not {type(endpoint).__name__}")
        user_entity = str(user_entity)
        user = self.users.get(user_entity)
        if user is None:
            if len(self.users) >= self.max_users:
                raise ConferenceFull(
                    f"conference {self.uri} is full ({self.max_users} users)")
            user = self.users[user_entity] = User(user_entity, display_text)
        elif display_text is not None:
            user.display_text = display_text
        user.endpoints[endpoint.entity] = endpoint
        self._touch(user)

    def update_endpoint(self, user_entity, endpoint_entity, **fields):
        """Change fields of an existing endpoint (KeyError if there is none).

        The fields are those of ``Endpoint.__init__`` except ``entity``; all are
        checked before any is set, so a bad value changes nothing.
        """
        user = self.users[user_entity]
        endpoint = user.endpoints[endpoint_entity]
        scratch = Endpoint.__new__(Endpoint)
        for name, value in fields.items():
            scratch._set(name, value)
        for name in fields:
            setattr(endpoint, name, getattr(scratch, name))
        self._touch(user)

    def remove_endpoint(self, user_entity, endpoint_entity):
        """Remove an endpoint; a user left with none is removed and recorded
        as deleted.  Removing what is not there does nothing (a dialog may end
        twice: BYE and a timeout)."""
        user = self.users.get(user_entity)
        if user is None or endpoint_entity not in user.endpoints:
            return
        del user.endpoints[endpoint_entity]
        if user.endpoints:
            self._touch(user)
            return
        del self.users[user_entity]
        user.fragment = None
        self._changed.pop(user_entity, None)
        self._deleted[user_entity] = None

    def take_changes(self):
        """Return the users changed and deleted since the last call, and
        forget them.  A user added and removed in between is deleted."""
        changes = Changes(list(self._changed), list(self._deleted))
        self._changed.clear()
        self._deleted.clear()
        return changes
