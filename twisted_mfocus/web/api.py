"""The JSON management API (``--http``), on twisted.web.

``GET /api/v1/conferences`` lists conferences (name, uri, member count);
``GET /api/v1/conferences/NAME`` shows one:
``{"name", "uri", "locked", "foci": [{"uri", "role", "capacity", "members",
"state", "links"}],
"members": [{"uri", "focus", "status", "joined", "muted"}], "subscriptions"}``
(each member also names its ``endpoint`` and ``media`` status, and
``level``: how loud it was lately, 0..1, None unless held here; each focus
its ``epoch``; ``cascades``: the foci this one has a media leg with).  The
foci are the live ones: a focus that left or failed is not listed.
``muted``, ``rtp`` and ``locked`` are this focus's own (``muted`` None for
a member another focus holds), as is ``recording``: the file this focus
records the room to, or null.

Moderation (focus/moderation.py; URI percent-encoded; a member held by
another focus: 409 naming that focus, but for kick):

- ``POST /api/v1/conferences/NAME/members/URI/mute`` (and ``/unmute``)
  keeps a member's voice out of the mix: ``{"uri", "muted"}``;
- ``POST …/NAME/members/URI/kick`` ends its call with BYE: ``{"uri", "calls"}``;
  a member of another focus: that focus is asked to (a REFER with
  ``method=BYE``), 202 ``{"uri", "forwarded_to"}``;
- ``POST …/NAME/dial``, body ``{"uri": URI}``: the focus dials URI in, as
  a member's REFER does (``[focus] refer_targets``: 403 with ``reason``):
  202 ``{"uri", "status": "dialling"}``; ``GET …/NAME/dials`` shows each
  dial's outcome ``[{"uri", "status", "sip"}]``;
- ``POST …/NAME/mute-all`` (and ``/unmute-all``), optional body
  ``{"except": URI}``: everyone held here but one: ``{"name", "muted",
  "except", "members", "elsewhere"}``;
- ``POST …/NAME/lock`` (and ``/unlock``): a new caller is refused 403
  "Conference Locked" (members stay): ``{"name", "locked"}``;
- ``POST …/NAME/record``, body ``{"action": "start"}`` or ``{"action":
  "stop"}``: the room's mix to a WAV file and JSON sidecar the focus names
  in ``[recording] directory`` (focus/recordings.py): ``{"file", "sidecar",
  "recording"}``; 403 with recording off, 409 already (or not) recording,
  507 short of disk space (``min_free_mb``);
- ``POST …/NAME/end``: BYE to every call, a final NOTIFY to every
  subscriber: ``{"name", "calls", "subscriptions"}`` (409 naming the foci
  while other foci hold members).

``POST /api/v1/leave`` makes this focus leave (as SIGTERM does: its members
are handed to other foci, then the process exits): 202.
``GET /`` (with ``/page.js``, ``/page.css``): the live page (page.py),
served without the token, which its API calls carry.
``GET /metrics``: Prometheus metrics (metrics.py: SIP messages, calls,
conferences, RTP, the mixer), in the text exposition format or OpenMetrics
as the Accept header asks, made by prometheus_client's Twisted resource;
behind the same guard as every other path.
Other tools (``mfocusctl``, ctl.py) depend on these field names: add
fields, never rename them.  404 for anything unknown, 405 for methods
other than GET (POST for the actions and leave), 400 for a body that is
not ``{"except": URI}`` (a dial's: ``{"uri": URI}``), 413 for one over MAX_BODY bytes.

With ``[http] token_file`` every request, whatever its method and path,
must carry ``Authorization: Bearer TOKEN`` (RFC 6750 §2.1); any other is
answered 401 with ``WWW-Authenticate: Bearer realm="mfocus"`` (§3) before
its path is even looked at, and logged (one line per client address per
10 s, instead of the access log's line per request).  Without a token
file the API listens on loopback only (listen.py).  Against browsers
(guard.py, which orders every check): a ``Host`` that is not the API's
address is 421 (DNS rebinding), an ``Origin`` not its own 403, and a POST
not ``Content-Type: application/json`` 415; all before the path.  Every
response says ``X-Content-Type-Options: nosniff`` and
``Cache-Control: no-store``.
"""

import json
import time
from urllib.parse import unquote

from twisted.web import resource, server

from ..config import ConfigError
from .guard import REFUSED, Guard, json_body
from .page import PUBLIC, page_children

__all__ = ["api_root", "api_site", "read_token"]

#: The shortest token accepted (``openssl rand -hex 32`` makes 64 characters).
MIN_TOKEN_LENGTH = 16
#: The largest POST body read (``{"except": URI}`` needs far less).
MAX_BODY = 4096

#: ``POST …/NAME/members/URI/ACTION``: the moderation call, given (moderation, name, uri)
MEMBER_ACTIONS = {
    b"mute": lambda m, name, uri: m.set_muted(name, uri, True),
    b"unmute": lambda m, name, uri: m.set_muted(name, uri, False),
    b"kick": lambda m, name, uri: m.kick(name, uri),
}
#: ``POST …/NAME/ACTION``: the moderation call, given (moderation, name, spare);
#: only the mute-alls take a body (its ``except``, the member spared)
ROOM_ACTIONS = {
    b"mute-all": lambda m, name, spare: m.mute_all(name, True, spare),
    b"unmute-all": lambda m, name, spare: m.mute_all(name, False, spare),
    b"lock": lambda m, name, spare: m.set_locked(name, True),
    b"unlock": lambda m, name, spare: m.set_locked(name, False),
    b"end": lambda m, name, spare: m.end(name),
}
TAKES_BODY = (b"mute-all", b"unmute-all")


class _JSON(resource.Resource):
    allowed = (b"GET", b"HEAD")

    def render(self, request):
        if request.method not in self.allowed:
            request.setResponseCode(405)
            request.setHeader(b"allow", b", ".join(self.allowed))
            return self._json(request, {"error": "method not allowed"})
        return super().render(request)

    _json = staticmethod(json_body)

    def _not_found(self, request, what):
        request.setResponseCode(404)
        return self._json(request, {"error": f"no such {what}"})


class _Conference(_JSON):
    isLeaf = True
    allowed = (b"GET", b"HEAD", b"POST")

    def __init__(self, views, name):
        super().__init__()
        self.views, self.name = views, name

    def render_POST(self, request):
        """A moderation action: ``members/URI/ACTION`` or ``ACTION``."""
        path, moderation = request.postpath, self.views.moderation
        if len(path) == 3 and path[0] == b"members" and path[2] in MEMBER_ACTIONS:
            member = unquote(path[1].decode("utf-8", "replace"))
            status, body = MEMBER_ACTIONS[path[2]](moderation, self.name, member)
        elif path == [b"dial"]:                     # body {"uri": URI}
            uri = _dial_uri(request)
            status, body = uri if isinstance(uri, tuple) else moderation.dial(self.name, uri)
        elif path == [b"record"]:                   # body {"action": "start"|"stop"}
            action = _record_action(request)
            status, body = action if isinstance(action, tuple) else \
                moderation.record(self.name, action == "start")
        elif len(path) == 1 and path[0] in ROOM_ACTIONS:
            spare = _spare(request) if path[0] in TAKES_BODY else None
            if isinstance(spare, tuple):            # the body is refused
                status, body = spare
            else:
                status, body = ROOM_ACTIONS[path[0]](moderation, self.name, spare)
        else:
            return self._not_found(request, "resource")
        request.setResponseCode(status)
        return self._json(request, body)

    def render_GET(self, request):
        if request.postpath == [b"dials"]:         # the operator's dials (moderation.py)
            dials = self.views.moderation.dials(self.name)
            if dials is None:
                return self._not_found(request, "conference")
            return self._json(request, dials)
        if request.postpath and request.postpath != [b""]:
            return self._not_found(request, "resource")
        view = self.views.conference(self.name)
        if view is None:
            return self._not_found(request, "conference")
        return self._json(request, view)


def _one_field(request, key, valid, shape, optional=False):
    """The ``key`` of a JSON body holding that one key (``valid(value)``),
    or the (status, body) refusing it: 413 past MAX_BODY, 400 for anything
    else, an unknown key too (a typo must not, say, mute the speaker).
    ``optional``: no body, or one without ``key``, gives None."""
    data = request.content.read(MAX_BODY + 1) if request.content is not None else b""
    if len(data) > MAX_BODY:
        return 413, {"error": f"body over {MAX_BODY} bytes"}
    if optional and not data.strip():
        return None
    try:
        value = json.loads(data)
    except ValueError:
        value = None
    if not isinstance(value, dict) or set(value) - {key} or \
            (key not in value and not optional) or not valid(value.get(key)):
        return 400, {"error": f"body must be {shape}"}
    return value.get(key)


def _spare(request):
    """The ``except`` of a mute-all's body (None: none named)."""
    return _one_field(request, "except", lambda v: v is None or isinstance(v, str),
                      '{"except": URI}', optional=True)


def _dial_uri(request):
    """The ``uri`` of a dial's body."""
    return _one_field(request, "uri", lambda v: isinstance(v, str), '{"uri": URI}')


def _record_action(request):
    """``start`` or ``stop``: a recording's body ``{"action": ...}``."""
    return _one_field(request, "action", lambda v: v in ("start", "stop"),
                      '{"action": "start"} or {"action": "stop"}')


class _Conferences(_JSON):
    def __init__(self, views):
        super().__init__()
        self.views = views

    def getChild(self, path, request):
        if not path:
            return self
        return _Conference(self.views, path.decode("utf-8", "replace"))

    def render_GET(self, request):
        return self._json(request, self.views.summaries())


class _Leave(_JSON):
    isLeaf = True
    allowed = (b"POST",)

    def __init__(self, leave):
        super().__init__()
        self.leave = leave

    def render_POST(self, request):
        if request.postpath and request.postpath != [b""]:
            return self._not_found(request, "resource")
        request.setResponseCode(202)
        self.leave()
        return self._json(request, {"leaving": True})


class _Metrics(_JSON):
    """``GET /metrics``: ``exposition`` (metrics.Metrics.resource) renders
    it; any other method or a longer path is refused here, in JSON."""

    isLeaf = True
    allowed = (b"GET",)

    def __init__(self, exposition):
        super().__init__()
        self.exposition = exposition

    def render_GET(self, request):
        if request.postpath and request.postpath != [b""]:
            return self._not_found(request, "resource")
        return self.exposition.render(request)


class _NotFound(_JSON):
    isLeaf = True

    def render_GET(self, request):
        return self._not_found(request, "resource")


class _Node(resource.Resource):
    """A path step: only the named children exist."""

    def __init__(self, children):
        super().__init__()
        for name, child in children.items():
            self.putChild(name, child)

    def getChild(self, path, request):
        return _NotFound()

    def render(self, request):
        return _NotFound().render(request)


def read_token(path):
    """The API token in the file ``path`` (``[http] token_file``), stripped
    of surrounding whitespace; ConfigError, naming the key, for a file that
    cannot be read or a token that is empty, holds whitespace or other than
    visible ASCII, or is shorter than MIN_TOKEN_LENGTH."""
    key = "http.token_file"
    try:
        with open(path, "rb") as f:
            token = f.read().strip()
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {path}: {e.strerror or e}")
    if not token:
        raise ConfigError(f"{key}: {path} holds no token")
    if any(c in b" \t\r\n\v\f" for c in token):
        raise ConfigError(f"{key}: the token in {path} contains whitespace (one token, one line)")
    if not all(0x21 <= c <= 0x7e for c in token):
        raise ConfigError(f"{key}: the token in {path} must be visible ASCII "
                          "(e.g. made by openssl rand -hex 32)")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"{key}: the token in {path} is shorter than "
                          f"{MIN_TOKEN_LENGTH} characters")
    return token.decode("ascii")


def api_root(views, leave=None, token=None, now=time.monotonic, names=None, metrics=None):
    """The site root over ``views`` (focus/views.py):
    ``/api/v1/conferences[/NAME]``, and ``/api/v1/leave`` when ``leave`` (a
    callable that makes the process leave) is given; with ``token`` (see
    read_token) only for requests that carry it.  ``now``: the clock of the
    refusal log's bound.  ``names``: the Host names answered besides the
    listener's address; None (only for unit tests of the token) checks
    neither Host, Origin nor Content-Type (guard.py).  ``metrics``: the
    resource that renders ``GET /metrics`` (metrics.Metrics.resource), if
    any; the guard comes first for it too."""
    v1 = {b"conferences": _Conferences(views)}
    if leave is not None:
        v1[b"leave"] = _Leave(leave)
    top = {b"api": _Node({b"v1": _Node(v1)})}
    if metrics is not None:
        top[b"metrics"] = _Metrics(metrics)
    top.update(page_children())         # the live page: /, /page.js, /page.css (page.py)
    return Guard(_Node(top), token, now, names, public=PUBLIC)


class _Site(server.Site):
    """twisted.web's site, whose access log leaves out the refused requests
    (guard.REFUSED: 400, 401, 403, 415, 421): the guard logs those, bounded."""

    def log(self, request):
        if request.code not in REFUSED:
            super().log(request)


def api_site(views, leave=None, token=None, names=(), metrics=None):
    """The ``server.Site`` of the API (see api_root), every check on:
    ``names`` are the extra Host names it answers to (e.g. the DNS name
    of a host whose API is reached with the token), besides the address a
    connection comes in on and, on loopback, ``localhost``."""
    return _Site(api_root(views, leave, token, names=tuple(names or ()), metrics=metrics))
